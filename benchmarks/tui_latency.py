"""Key press -> updated screen in the explorer, headless (`App.run_test` + Pilot).

    python benchmarks/tui_latency.py [--changes 100] [--size 120x40]

The micro-batch box has focus; Up and Down alternate, so every key press changes the
plan. A sample runs from handing the key event to the app's driver (what `pilot.press`
does) to the end of the first screen paint (the compositor update Textual renders for the
terminal) that shows the new plan. The solvers' "largest that fits" line follows in a
worker thread; it is let finish between samples (a person does not type at 100 Hz) and is
not counted. Target: median under 50 ms on the dev machine.

Also printed: the time `await pilot.press(...)` takes, which adds Textual's wait-for-idle
polling on top of the app's own work (an upper bound, not the user-visible latency).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from textual import events

from vramplan.tui.app import ExplorerApp


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return f"{name}: median {statistics.median(ordered) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"


async def measure(changes: int, size: tuple[int, int]) -> tuple[list[float], list[float]]:
    app = ExplorerApp("13b", "t4")
    to_paint, pilot_press = [], []
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.screen.query_one("#knob-micro_batch_size").focus()
        await pilot.pause()
        display, painted, waiting_for = app._display, asyncio.Event(), [None]

        def timed_display(screen, renderable):
            display(screen, renderable)
            if renderable is not None and waiting_for[0] is not None and app.state.breakdown is not waiting_for[0]:
                waiting_for[0] = None
                painted.set()

        app._display = timed_display
        for i in range(changes):
            key = "up" if i % 2 == 0 else "down"
            waiting_for[0] = app.state.breakdown
            painted.clear()
            start = time.perf_counter()
            app._driver.send_message(events.Key(key, None))
            await asyncio.wait_for(painted.wait(), timeout=5)
            to_paint.append(time.perf_counter() - start)
            await app.workers.wait_for_complete()
            await pilot.pause()
        app._display = display
        for i in range(changes):
            start = time.perf_counter()
            await pilot.press("up" if i % 2 == 0 else "down")
            pilot_press.append(time.perf_counter() - start)
            await app.workers.wait_for_complete()
    return to_paint, pilot_press


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--size", default="120x40", help="terminal COLSxROWS")
    args = parser.parse_args()
    size = tuple(int(part) for part in args.size.split("x"))
    to_paint, pilot_press = asyncio.run(measure(args.changes, size))
    print(f"{args.changes} changes of the micro-batch at {args.size}")
    print(summary("key press -> updated screen", to_paint) + "  (target: median < 50 ms)")
    print(summary("await pilot.press(), with Textual's idle polling", pilot_press))


if __name__ == "__main__":
    main()
