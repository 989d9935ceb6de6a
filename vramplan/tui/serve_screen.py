"""The serving view: an engine select (back to "train (fit)" or vLLM, llama.cpp, HF generate), that
engine's knobs, and its verdict, headline numbers and full plan, redrawn as a knob changes."""
from __future__ import annotations

from functools import partial

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Select, Static

from vramplan.errors import InputError
from vramplan.tui.serve_state import AUTO, BLANK, DOUBLING, ENGINES, INTEGER, KNOBS, TRAIN, ServeWhatIf, knob_choices, verdict_line
from vramplan.tui.widgets.knobs import KnobInput, KnobSelect, NumberInput, _knob

ENGINE_LABELS = {"vllm": "vLLM serve", "llama.cpp": "llama.cpp", "hf": "HF generate()"}


def slug(engine: str) -> str:
    """The engine's name as a widget id allows it (llama.cpp -> llamacpp)."""
    return engine.replace(".", "")


def knob_widget(engine: str, dest: str, value: str):
    common = dict(id=f"knob-{slug(engine)}-{dest}", compact=True)
    if choices := knob_choices(engine, dest):
        return KnobSelect([(AUTO, AUTO), *((c, c) for c in choices)], value=value or AUTO, allow_blank=False, **common)
    if dest in INTEGER:
        return NumberInput(value, doubling=dest in DOUBLING, placeholder=BLANK.get(dest, ""), **common)
    return KnobInput(value, placeholder=BLANK.get(dest, ""), **common)


class ServeScreen(Screen):
    """Engine and its knobs on the left; the engine's verdict and plan on the right."""

    BINDINGS = [
        Binding("tab", "app.focus_next", "next", priority=True),
        Binding("shift+tab", "app.focus_previous", "back", priority=True),
        Binding("escape", "train", "training view"),
    ]
    AUTO_FOCUS = "#knob-engine"

    def __init__(self, state: ServeWhatIf) -> None:
        super().__init__()
        self.state = state
        self.shown = {(engine, dest): value for engine, raw in state.raw.items() for dest, value in raw.items()}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with VerticalScroll(id="knobs", can_focus=False):
                options = [(TRAIN, TRAIN), *((ENGINE_LABELS[e], e) for e in ENGINES)]
                yield _knob("engine", "engine", KnobSelect(options, value=self.state.engine, allow_blank=False,
                                                           compact=True, id="knob-engine"))
                for engine in ENGINES:
                    for dest, _flag, text in KNOBS[engine]:
                        knob = _knob(f"{slug(engine)}-{dest}", text, knob_widget(engine, dest, self.state.raw[engine][dest]))
                        knob.add_class(f"engine-{slug(engine)}")
                        yield knob
            with VerticalScroll(id="results", can_focus=False):
                yield Static(id="verdict")
                yield Static(id="serve-plan")
                yield Static(id="command")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.watch(self.query_one("#knob-engine"), "value", self.switch, init=False)
        for engine in ENGINES:
            for dest, _flag, _text in KNOBS[engine]:
                self.watch(self.query_one(f"#knob-{slug(engine)}-{dest}"), "value", partial(self.change, engine, dest), init=False)
        self._show_knobs()
        self.show_results()

    def _show_knobs(self) -> None:
        for engine in ENGINES:
            for knob in self.query(f".engine-{slug(engine)}"):
                knob.display = engine == self.state.engine

    def switch(self, engine) -> None:
        if engine == TRAIN:
            self.app.pop_screen()
            return
        if engine == self.state.engine:
            return
        try:
            self.state.set_engine(engine)
        except InputError as exc:  # e.g. a model the engine cannot load: say so, keep the last engine
            self.notify(str(exc), title=f"{engine} cannot plan this", severity="error")
            with self.prevent(Select.Changed):
                self.query_one("#knob-engine", Select).value = self.state.engine
            return
        self._show_knobs()
        self.show_results()

    def change(self, engine: str, dest: str, raw) -> None:
        """Apply one knob; on bad input show the error under it and keep the last good plan."""
        if self.shown.get((engine, dest)) == raw or engine != self.state.engine:
            return
        self.shown[(engine, dest)] = raw
        error = self.query_one(f"#error-{slug(engine)}-{dest}", Static)
        widget = self.query_one(f"#knob-{slug(engine)}-{dest}")
        try:
            self.state.set_knob(dest, "" if raw == AUTO else raw)
        except InputError as exc:
            error.update(f"{exc}; planned with {self.state.raw[engine][dest] or 'the default'}")
            error.add_class("-shown")
            widget.add_class("-invalid")
            return
        error.update("")
        error.remove_class("-shown")
        widget.remove_class("-invalid")
        self.show_results()

    def show_results(self) -> None:
        plan = self.state.plan
        verdict = self.query_one("#verdict", Static)
        verdict.set_class(plan.fits, "-fits")
        verdict.set_class(not plan.fits, "-oom")
        model = self.state.whatif
        verdict.update(f"{verdict_line(self.state.engine, plan)}\n"
                       f"{model.model.name} on {model.gpu.key} with {ENGINE_LABELS[self.state.engine]}")
        self.query_one("#serve-plan", Static).update(plan.render_text())
        self.query_one("#command", Static).update(f"$ {self.state.command_line()}")

    def action_next_engine(self) -> None:
        """The next engine in the list (after the last: back to the training view)."""
        order = [*ENGINES, TRAIN]
        self.query_one("#knob-engine", Select).value = order[(order.index(self.state.engine) + 1) % len(order)]

    def action_train(self) -> None:
        self.app.pop_screen()
