"""Screens: the explorer itself, the help, and a viewer for generated text."""
from __future__ import annotations

from functools import partial

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Label, Markdown, OptionList, Select, Static, TextArea
from textual.worker import get_current_worker

from vramplan.advice import advise
from vramplan.errors import InputError
from vramplan.tui.state import HOST_RAM_KNOB, PARALLEL_KNOBS, WhatIf, largest_that_fit
from vramplan.tui.widgets import AdviceList, ComponentTable, KnobPanel, Limits, MemoryBar, RankSummary, Verdict
from vramplan.tui.widgets.knobs import FREE_TEXT, knob_values


class Results(VerticalScroll, can_focus=False):
    """The answers: output only, so Tab goes from knob to knob (and to the advice list)."""


class ExplorerScreen(Screen):
    """Knobs on the left; verdict, bar, table, limits, advice and the command line on the right."""

    # Priority, so focus moves the moment Tab arrives. A plain Tab binding acts only after the
    # key has bubbled from the focused widget up to the App's queue, behind any keys typed
    # meanwhile: on a busy terminal "Tab 2 0 4 8" then typed "2048" into the previous field.
    BINDINGS = [
        Binding("tab", "app.focus_next", "next", priority=True),
        Binding("shift+tab", "app.focus_previous", "back", priority=True),
    ]
    AUTO_FOCUS = "#knob-model"  # the first knob, not the panel that holds it

    def __init__(self, state: WhatIf) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield KnobPanel(self.state, id="knobs")
            with Results(id="results"):
                yield Verdict(id="verdict")
                yield MemoryBar(id="bar")
                yield RankSummary(id="ranks")
                yield Limits(id="limits")
                yield Label("what would make it fit (Enter applies):", id="advice-title")
                yield AdviceList(id="advice")
                yield ComponentTable(id="components")
                yield Static(id="command")
        yield Footer(compact=True)  # compact, so every key fits at 100 columns

    def on_mount(self) -> None:
        # Each knob reports to `change` from inside its own value change, so a key's effect on
        # the plan (and the error line) is settled before the widget handles its next key;
        # Changed messages would reach the screen only after bubbling through six queues.
        # Found once: a CSS query on every key press walks all the knobs' widgets (a few ms each time).
        self._advice_widgets = (self.query_one("#advice-title"), self.query_one("#advice"))
        panel = self.query_one(KnobPanel)
        for key in panel.shown:
            widget = panel.query_one(f"#knob-{key}")
            self.watch(widget, "value", partial(self.change, key), init=False)
            self.watch(widget, "has_focus", partial(self._left, key), init=False)
        self.show_results()

    # -- knob changes -> library -> results -------------------------------------------------

    def change(self, key: str, raw) -> None:
        """Apply one knob; on bad input show the error under it and keep the last good result."""
        panel = self.query_one(KnobPanel)
        if panel.shown.get(key) == raw:
            return  # the echo of a value the panel set itself
        panel.shown[key] = raw
        pair = next((lst for lst, text in FREE_TEXT.items() if key in (lst, text)), None)
        try:
            if key in PARALLEL_KNOBS:
                self.state.set_parallel(key, raw)
            elif key == HOST_RAM_KNOB:
                self.state.set_host_ram(raw)
            elif pair is None:
                self.state.set_field(key, raw)
            else:
                from_list = key == pair and raw is not Select.NULL
                text = str(raw) if from_list else panel.choice(pair)
                (self.state.set_model if pair == "model" else self.state.set_gpu)(text)
        except InputError as exc:
            panel.set_error(key, self._not_applied(key, exc.message if exc.field in (key, pair) else str(exc)))
            return
        except Exception as exc:  # e.g. an unreadable file: say so, keep the last good answer
            panel.set_error(key, self._not_applied(key, f"{type(exc).__name__}: {exc}"))
            return
        if pair and from_list:
            panel.set_quietly(FREE_TEXT[pair], "")  # the list's pick replaces the typed text
        elif pair and str(panel.shown[FREE_TEXT[pair]]).strip():
            panel.set_quietly(pair, Select.NULL)  # the list no longer says what is in use
        for other in (pair, FREE_TEXT[pair]) if pair else (key,):
            panel.set_error(other, None)
        self.show_results()

    def _in_use(self, key: str) -> str:
        """What the plan uses for knob `key`, as the user would type it."""
        if key in ("model", "model_path"):
            return self.state.model_text
        if key in ("gpu", "gpu_size"):
            return self.state.gpu_text
        return str(knob_values(self.state)[key]) or "blank"

    def _not_applied(self, key: str, message: str) -> str:
        # The field and the plan differ while this shows, so say what the plan uses.
        return f"{message}; planned with {self._in_use(key)} (leaving the field puts it back)"

    def _left(self, key: str, has_focus: bool) -> None:
        if not has_focus:
            self._put_back_if_not_applied(key)

    def _put_back_if_not_applied(self, key: str) -> None:
        """Leaving a knob whose value was not applied puts back the value in use: at rest,
        every field shows what the plan uses."""
        panel = self.query_one(KnobPanel)
        if not self.app.app_focus or key not in panel.errors():
            return  # the terminal lost focus (the user comes back to this), or nothing to undo
        pair = next((lst for lst, text in FREE_TEXT.items() if key in (lst, text)), None)
        values = knob_values(self.state)
        for other in (pair, FREE_TEXT[pair]) if pair else (key,):
            panel.set_quietly(other, values[other])
            panel.set_error(other, None)

    def show_results(self) -> None:
        state, breakdown, cluster = self.state, self.state.breakdown, self.state.cluster
        with self.app.batch_update():
            self.query_one(Verdict).show(breakdown, cluster)
            self.query_one(MemoryBar).breakdown = breakdown  # on more than one GPU: the worst rank's
            self.query_one(RankSummary).show(cluster, state.parallel, state.host_ram_source)
            self.query_one(ComponentTable).show(breakdown, per_rank=cluster is not None)
            self.query_one("#command", Static).update(f"$ {state.command_line()}")
            for widget in self._advice_widgets:
                widget.display = not breakdown.fits and cluster is None  # the advice plans one GPU
            self.query_one(Limits).set_class(True, "-stale")
        # Paint the new plan first; the solvers' thread would otherwise compete with it for the GIL.
        self.call_after_refresh(self.solve, state.model, state.gpu, state.run, breakdown.fits, state.parallel)

    @work(exclusive=True, thread=True, group="solve")
    def solve(self, model, gpu, run, fits: bool, parallel=None) -> None:
        """Largest batch/seq/rank (per rank on more than one GPU) and (one GPU, when it does not fit) advice,
        off the UI thread."""
        per_rank = parallel is not None and not parallel.is_single
        try:
            limits: dict | str = largest_that_fit(model, gpu, run, parallel)
        except Exception as exc:  # a solver bug must not take the explorer down
            limits = f"solver error: {exc}"
        try:
            advice: list | str = [] if fits or per_rank else advise(model, gpu, run)
        except Exception as exc:
            advice = f"advice error: {exc}"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_solved, (model, gpu, run, parallel), limits, advice)

    def _show_solved(self, key, limits, advice) -> None:
        if key != (self.state.model, self.state.gpu, self.state.run, self.state.parallel):
            return  # the knobs moved on; a newer worker is coming
        if isinstance(limits, str):
            self.query_one(Limits).show_unavailable(limits)
        else:
            self.query_one(Limits).show_limits(limits, per_rank=self.state.cluster is not None)
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
| F4 | serving view: vLLM, llama.cpp or HF generate and its knobs; there F4 is the next engine, Escape goes back |
| Ctrl+S | save a screenshot (SVG) and the plan (JSON) to the current folder |
| Ctrl+P | command palette |
| Ctrl+Q | quit |

More than one GPU: open "more knobs" and set GPUs, strategy (ddp, fsdp, zero1-3, ...),
offload and the node's host RAM. The verdict, bar and table are then the worst rank's (as
`vramplan fit --gpus N --strategy S` prints them), with every rank's need and the host RAM
line under the bar; the largest batch / sequence / rank are those at which every rank fits,
and the advice (what would make it fit) is for one GPU.
`vramplan tui --gpu 8xa100-40g` starts with eight.

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
