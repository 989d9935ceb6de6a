"""Shared by the explorer tests: drive the app headless and read what it shows."""
from __future__ import annotations

import asyncio
import html
import re

from vramplan.present import gib
from vramplan.tui.widgets.component_table import CAPACITY, TOTAL


def drive(app, script, size=(120, 40)):
    """Run `await script(pilot)` inside `app.run_test` (no pytest-asyncio needed)."""
    async def main():
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            return await script(pilot)

    return asyncio.run(main())


async def settle(pilot):
    """Let change handlers, then the solver worker, finish and the screen repaint."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector).content)


def assert_shows(app, expected) -> None:
    """The verdict and every table cell show `expected` (a one-GPU Breakdown from the library);
    the multi-GPU components have no row on one GPU."""
    verdict = shown(app, "#verdict")
    word = "FITS" if expected.fits else "DOES NOT FIT"
    assert verdict.startswith(f"{word}: needs {gib(expected.required_bytes)} GiB of "
                              f"{gib(expected.capacity_bytes)} GiB, headroom {gib(expected.headroom_bytes)} GiB"), verdict
    assert_table_shows(app, expected, per_rank=False)


def assert_table_shows(app, expected, per_rank: bool) -> None:
    """Every row of the component table shows `expected`; the multi-GPU rows exist only `per_rank`."""
    from vramplan.components import component

    table = app.screen.query_one("#components")
    values = {**expected.components(), TOTAL: expected.required_bytes, CAPACITY: expected.capacity_bytes}
    rows = [key.value for key in table.rows]
    for key, value in values.items():
        if not per_rank and getattr(component(key), "multi_gpu", False):
            assert key not in rows, key
            continue
        assert table.shown_gib(key) == (gib(value) if value else "–"), key


def svg_text(svg: str) -> list[str]:
    """The characters of a Textual SVG screenshot, line by line (for readable diffs)."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for match in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        x, y, text = float(match.group(1)), float(match.group(2)), html.unescape(match.group(3)).replace("\xa0", " ")
        rows.setdefault(y, []).append((x, text))
    lines = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            line = line.ljust(round(x / 12.2)) + text
        lines.append(line.rstrip())
    return lines


def normalise_svg(svg: str) -> str:
    """Drop what may vary between runs: the content-hash class prefix and the window title."""
    svg = re.sub(r"terminal-\d+", "terminal", svg)
    return re.sub(r'(<text class="terminal-title"[^>]*>)[^<]*(</text>)', r"\1\2", svg)


# What a terminal sends for each key (Textual's Pilot derives the same characters).
_CHARACTERS = {"tab": "\t", "shift+tab": None, "backspace": "\x08", "enter": "\r", "escape": "\x1b"}


def type_ahead(app, *keys: str) -> None:
    """Hand `keys` to the app all at once, as a terminal does when keys arrive faster than the
    app handles them (a busy machine, a quick typist). `pilot.press` waits for the app to be
    idle after every key, so it never shows what happens to keys that queue up."""
    from textual import events

    for key in keys:
        event = events.Key(key, _CHARACTERS.get(key, key if len(key) == 1 else None))
        event.set_sender(app)
        app._driver.send_message(event)
