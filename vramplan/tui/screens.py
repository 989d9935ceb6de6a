"""Screens: the explorer itself, the help, and a viewer for generated text."""
from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Checkbox, Footer, Header, Input, Label, Markdown, OptionList, Select, Static, TextArea
from textual.worker import get_current_worker

from vramplan.advice import advise
from vramplan.errors import InputError
from vramplan.tui.state import WhatIf, largest_that_fit
from vramplan.tui.widgets import AdviceList, ComponentTable, KnobPanel, Limits, MemoryBar, Verdict
from vramplan.tui.widgets.knobs import FREE_TEXT, knob_key


class ExplorerScreen(Screen):
    """Knobs on the left; verdict, bar, table, limits, advice and the command line on the right."""

    def __init__(self, state: WhatIf) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield KnobPanel(self.state, id="knobs")
            with VerticalScroll(id="results"):
                yield Verdict(id="verdict")
                yield MemoryBar(id="bar")
                yield Limits(id="limits")
                yield Label("what would make it fit (Enter applies):", id="advice-title")
                yield AdviceList(id="advice")
                yield ComponentTable(id="components")
                yield Static(id="command")
        yield Footer()

    def on_mount(self) -> None:
        self.show_results()

    # -- knob changes -> library -> results -------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        self.change(knob_key(event.input.id), event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        self.change(knob_key(event.select.id), event.value)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.change(knob_key(event.checkbox.id), event.value)

    def change(self, key: str | None, raw) -> None:
        """Apply one knob; on bad input show the error under it and keep the last good result."""
        panel = self.query_one(KnobPanel)
        if key is None or panel.shown.get(key) == raw:
            return  # not a knob, or the echo of a value the panel set itself
        panel.shown[key] = raw
        pair = next((lst for lst, text in FREE_TEXT.items() if key in (lst, text)), None)
        try:
            if pair is None:
                self.state.set_field(key, raw)
            else:
                from_list = key == pair and raw is not Select.NULL
                text = str(raw) if from_list else panel.choice(pair)
                (self.state.set_model if pair == "model" else self.state.set_gpu)(text)
        except InputError as exc:
            panel.set_error(key, exc.message if exc.field in (key, pair) else str(exc))
            return
        except Exception as exc:  # e.g. an unreadable file: say so, keep the last good answer
            panel.set_error(key, f"{type(exc).__name__}: {exc}")
            return
        if pair and from_list:
            panel.set_quietly(FREE_TEXT[pair], "")  # the list's pick replaces the typed text
        elif pair and str(panel.shown[FREE_TEXT[pair]]).strip():
            panel.set_quietly(pair, Select.NULL)  # the list no longer says what is in use
        for other in (pair, FREE_TEXT[pair]) if pair else (key,):
            panel.set_error(other, None)
        self.show_results()

    def show_results(self) -> None:
        state, breakdown = self.state, self.state.breakdown
        with self.app.batch_update():
            self.query_one(Verdict).show(breakdown)
            self.query_one(MemoryBar).breakdown = breakdown
            self.query_one(ComponentTable).show(breakdown)
            self.query_one("#command", Static).update(f"$ {state.command_line()}")
            self.query_one(Limits).set_class(True, "-stale")
            for widget in self.query("#advice, #advice-title"):
                widget.display = not breakdown.fits
        # Paint the new plan first; the solvers' thread would otherwise compete with it for the GIL.
        self.call_after_refresh(self.solve, state.model, state.gpu, state.run, breakdown.fits)

    @work(exclusive=True, thread=True, group="solve")
    def solve(self, model, gpu, run, fits: bool) -> None:
        """Largest batch/seq/rank and (when it does not fit) advice, off the UI thread."""
        try:
            limits: dict | str = largest_that_fit(model, gpu, run)
        except Exception as exc:  # a solver bug must not take the explorer down
            limits = f"solver error: {exc}"
        try:
            advice: list | str = [] if fits else advise(model, gpu, run)
        except Exception as exc:
            advice = f"advice error: {exc}"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_solved, (model, gpu, run), limits, advice)

    def _show_solved(self, key, limits, advice) -> None:
        if key != (self.state.model, self.state.gpu, self.state.run):
            return  # the knobs moved on; a newer worker is coming
        if isinstance(limits, str):
            self.query_one(Limits).show_unavailable(limits)
        else:
            self.query_one(Limits).show_limits(limits)
        if isinstance(advice, str):
            self.query_one(AdviceList).show_unavailable(advice)
        else:
            self.query_one(AdviceList).show(advice)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if not isinstance(event.option_list, AdviceList) or event.option.id is None:
            return
        item = event.option_list.items[int(event.option.id)]
        self.state.adopt(item.model, item.gpu, item.run)
        self.query_one(KnobPanel).show(self.state)
        self.show_results()
        self.notify(f"applied: {item.change}")


HELP = """\
# vramplan explorer

Change any knob on the left; the verdict, the bar, the table, the largest batch /
sequence / rank that fit and (when it does not fit) the advice follow at once. Every
number comes from the same library calls as `vramplan fit`.

| key | does |
|---|---|
| Tab / Shift+Tab | next / previous knob |
| Up / Down (in a number) | larger / smaller (sizes double and halve) |
| type in a list | jump to the matching model or GPU |
| Enter (on an advice line) | apply that change |
| F1 | this help |
| F2 | copy the equivalent `vramplan fit ...` command |
| F3 | show and copy the transformers/peft snippet (`--emit hf`) |
| Ctrl+S | save a screenshot (SVG) and the plan (JSON) to the current folder |
| Ctrl+P | command palette |
| Ctrl+Q | quit |

Bad input (letters in a number, a zero batch, an unknown model) is shown in red under
the knob; the results keep the last good answer until it is fixed.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Markdown(HELP)
            yield Footer()


class TextScreen(ModalScreen[None]):
    """Generated text (a code snippet) to read and select."""

    BINDINGS = [Binding("escape,q", "dismiss", "close")]

    def __init__(self, title: str, text: str, language: str | None = None) -> None:
        super().__init__()
        self.title_text, self.text, self.language = title, text, language

    def compose(self) -> ComposeResult:
        with Vertical(id="snippet"):
            yield Label(self.title_text, id="snippet-title")
            yield TextArea(self.text, language=self.language, read_only=True, id="snippet-text")
            yield Footer()
