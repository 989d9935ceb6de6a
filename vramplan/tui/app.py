"""The Textual app: key bindings and commands around ExplorerScreen.

    ExplorerApp(model_text="13b", gpu_text="t4", run=make_run(seq_len=1024)).run()
"""
from __future__ import annotations

import re
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.widgets import Input

from vramplan.specs import RunConfig
from vramplan.tui.screens import ExplorerScreen, HelpScreen, TextScreen
from vramplan.tui.state import WhatIf, emit_hf_snippet


class ExplorerApp(App[None]):
    TITLE = "vramplan explorer"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("f1", "help", "help", priority=True),
        Binding("f2", "copy_command", "copy command", priority=True),
        Binding("f3", "copy_hf", "HF snippet", priority=True),
        Binding("f4", "serve", "serve", priority=True),
        Binding("ctrl+s", "save", "save", priority=True),
        Binding("ctrl+q", "quit", "quit", priority=True),
    ]

    def __init__(self, model_text: str = "13b", gpu_text: str = "t4", run: RunConfig | None = None) -> None:
        super().__init__()
        self.state = WhatIf(model_text, gpu_text, run)  # InputError here, before any drawing
        self.serve_state = None  # made on the first F4: the serving view's engine and knobs

    def on_mount(self) -> None:
        self.push_screen(ExplorerScreen(self.state))

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Copy command line", "copy the equivalent `vramplan fit ...`", self.action_copy_command)
        yield SystemCommand("Show HF snippet", "transformers/peft code for this run", self.action_copy_hf)
        yield SystemCommand("Save screenshot and plan", "SVG + JSON in the current folder", self.action_save)
        yield SystemCommand("Serving engine", "vLLM, llama.cpp or HF generate for this model and GPU (F4)", self.action_serve)
        yield SystemCommand("Help", "keys and knobs", self.action_help)

    def action_serve(self) -> None:
        """F4: the serving view (vLLM, llama.cpp, HF generate) for the model and GPU on screen; there, the next engine."""
        from vramplan.errors import InputError
        from vramplan.tui.serve_screen import ServeScreen
        from vramplan.tui.serve_state import ServeWhatIf

        if isinstance(self.screen, ServeScreen):
            self.screen.action_next_engine()
            return
        try:
            if self.serve_state is None:
                self.serve_state = ServeWhatIf(self.state)
            else:
                self.serve_state.refresh()
        except InputError as exc:
            self.notify(str(exc), title="cannot plan serving", severity="error")
            return
        self.push_screen(ServeScreen(self.serve_state))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_copy_command(self) -> None:
        line = self.state.command_line()
        self.copy_to_clipboard(line)
        self.notify(line, title="copied to the clipboard")

    def action_copy_hf(self) -> None:
        snippet = emit_hf_snippet(self.state)
        self.copy_to_clipboard(snippet)
        self.push_screen(TextScreen("transformers/peft for this run (copied to the clipboard)", snippet))

    def _stem(self) -> str:
        words = f"vramplan-{self.state.breakdown.model}-{self.state.gpu.key}"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", words)

    def action_save_screenshot(self, path: str = "") -> str:
        """Save an SVG of the screen to `path` (default: the current folder); notify where."""
        target = Path(path) if path else Path.cwd() / f"{self._stem()}.svg"
        saved = self.save_screenshot(filename=target.name, path=str(target.parent.resolve()))
        self.notify(saved, title="screenshot saved")
        return saved

    def action_save_plan(self, path: str = "") -> str:
        """Save the Breakdown as JSON (what `vramplan fit --json` prints); notify where."""
        target = (Path(path) if path else Path.cwd() / f"{self._stem()}.json").resolve()
        target.write_text(self.state.plan_json() + "\n", encoding="utf-8")
        self.notify(str(target), title="plan saved")
        return str(target)

    def action_save(self) -> None:
        self.action_save_screenshot()
        self.action_save_plan()

    def stop_blinking(self) -> None:
        """Steady text cursors, so that two screenshots of one state are the same."""
        for widget in self.screen.query(Input):
            widget.cursor_blink = False


async def headless_screenshot(app: ExplorerApp, path: str, size: tuple[int, int] = (120, 40)) -> str:
    """Draw `app` without a terminal, let the solvers finish, and run its screenshot action."""
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.stop_blinking()
        await app.run_action(f"save_screenshot({str(path)!r})")
    return str(Path(path).resolve())
