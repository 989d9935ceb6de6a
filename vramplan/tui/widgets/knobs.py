"""The left panel: one input per knob, each with an inline error line under it.

Widgets are made from RunConfig's field types (bool: checkbox, a closed set of values: select, numbers
and names: text input), so a new RunConfig field shows up here without code. The panel
only shows values and errors; the screen turns its change events into library calls.
"""
from __future__ import annotations


from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Checkbox, Collapsible, Input, Label, Select, Static

from vramplan.catalog import list_models
from vramplan.errors import InputError
from vramplan.gpus import list_gpus
from vramplan.present import gib
from vramplan.specs import RunConfig
from vramplan.specs.run import field_choices, field_word, field_words
from vramplan.specs.parallel import STRATEGIES, Offload, ParallelConfig
from vramplan.tui.state import AUTO, HOST_RAM_KNOB, PARALLEL_KNOBS, WhatIf, field_type
from vramplan.tui.widgets.keys import KeysInOrder

# The knobs people turn, in tab order; the other RunConfig fields go under "more knobs".
MAIN_FIELDS = (
    "method", "weight_format", "double_quant", "compute_dtype",
    "lora_rank", "lora_alpha", "lora_targets", "optimizer",
    "micro_batch_size", "grad_accum_steps", "seq_len", "gradient_checkpointing", "attention",
)
LABELS = {
    "weight_format": "weights",
    "double_quant": "double quant",
    "compute_dtype": "compute",
    "lora_rank": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "lora_targets": "LoRA targets",
    "micro_batch_size": "micro-batch",
    "grad_accum_steps": "grad accum",
    "seq_len": "seq len",
    "gradient_checkpointing": "grad checkpointing",
    "quant_blocksize": "quant block",
    "max_new_tokens": "new tokens",
    "kv_cache_dtype": "KV cache",
    "fragmentation": "fragmentation",
}
PARALLEL_LABELS = {"gpu_count": "GPUs", "strategy": "strategy", "offload": "offload", HOST_RAM_KNOB: "host RAM"}
PLACEHOLDERS = {"lora_alpha": "blank: 2 x rank", "lora_targets": "all-linear or q_proj,v_proj",
                HOST_RAM_KNOB: "blank: this machine; 512GiB"}
# Knobs that people move in powers of two: up/down double and halve them.
DOUBLING = {"seq_len", "lora_rank", "quant_blocksize", "group_size", "max_new_tokens"}
# The model and the GPU each have a list and a free-text box; the text wins when not blank.
FREE_TEXT = {"model": "model_path", "gpu": "gpu_size"}


class KnobInput(KeysInOrder, Input):
    """A text knob whose editing keys keep the order they were typed in."""


class KnobSelect(KeysInOrder, Select):
    """A list knob; Space/Enter/Up/Down open it, in the order they were pressed."""


class KnobCheckbox(KeysInOrder, Checkbox):
    """A yes/no knob; Space/Enter toggle this box even when Tab follows at once."""


class NumberInput(KnobInput):
    """A text input for a whole number; up/down step it (double/halve for sizes)."""

    BINDINGS = [
        Binding("up", "step(1)", "larger", show=True),
        Binding("down", "step(-1)", "smaller", show=True),
    ]

    def __init__(self, *args, doubling: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.doubling = doubling

    def action_step(self, direction: int) -> None:
        try:
            value = int(self.value.strip())
        except ValueError:
            return
        if self.doubling:
            value = value * 2 if direction > 0 else max(1, value // 2)
        else:
            value = max(1, value + direction)
        self.value = str(value)
        self.cursor_position = len(self.value)


def knob_id(key: str) -> str:
    return f"knob-{key}"


def knob_key(widget_id: str | None) -> str | None:
    return widget_id.removeprefix("knob-") if widget_id and widget_id.startswith("knob-") else None


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def _field_widget(name: str, value):
    """The widget for RunConfig field `name`, showing `value` (a knob_values() entry)."""
    base, optional = field_type(name)
    tooltip = RunConfig.model_fields[name].description or None
    common = dict(id=knob_id(name), tooltip=tooltip, compact=True)
    if words := field_words(name):
        return KnobSelect([(word, word) for word in words], value=value, allow_blank=False, **common)
    if base is bool:
        return KnobCheckbox(label(name), value=value, **common)
    if choices := field_choices(name):
        options = [(AUTO, AUTO)] if optional else []
        options += [(choice, choice) for choice in choices]
        return KnobSelect(options, value=value, allow_blank=False, **common)
    if base is int:
        return NumberInput(value, doubling=name in DOUBLING, **common)
    return KnobInput(value, placeholder=PLACEHOLDERS.get(name, ""), **common)


def _parallel_widget(key: str, value):
    """The widget of a multi-GPU knob (`state.PARALLEL_KNOBS`, or the host RAM), showing `value`."""
    common = dict(id=knob_id(key), compact=True)
    if key == HOST_RAM_KNOB:
        return KnobInput(value, placeholder=PLACEHOLDERS[key], tooltip="host RAM of one node: a size, blank for this "
                         "machine's RAM, or unknown (no host verdict)", **common)
    tooltip = ParallelConfig.model_fields[PARALLEL_KNOBS[key]].description or None
    if key == "gpu_count":
        return NumberInput(value, doubling=True, tooltip=f"{tooltip} (1: today's one-GPU plan)", **common)
    choices = [choice for choice in STRATEGIES if choice != "single"] if key == "strategy" else list(Offload.__args__)
    options = ([(AUTO, AUTO)] if key == "strategy" else []) + [(choice, choice) for choice in choices]
    return KnobSelect(options, value=value, allow_blank=False, tooltip=tooltip, **common)


def _knob(key: str, text: str, widget) -> Vertical:
    """One knob: label and widget on a line, the error (hidden when none) under them."""
    heading = [] if isinstance(widget, Checkbox) else [Label(text, classes="knob-label")]
    return Vertical(Horizontal(*heading, widget, classes="knob-row"),
                    Static("", id=f"error-{key}", classes="knob-error"), classes="knob")


def knob_values(state: WhatIf) -> dict[str, object]:
    """Knob key -> the raw widget value that shows `state` (text, select value or bool).

    The model and GPU each have a list and a free-text box; a state the list cannot show
    (a config.json, a custom size) goes in the box and the list is blank.
    """
    catalog = state.model.source == "catalog"
    profile = state.gpu.key in {g.key for g in list_gpus()}
    values: dict[str, object] = {
        "model": state.model.name if catalog else Select.NULL,
        "model_path": "" if catalog else state.model_text,
        "gpu": state.gpu.key if profile else Select.NULL,
        "gpu_size": "" if profile else state.gpu_text,
    }
    for name in RunConfig.model_fields:
        value = getattr(state.run, name)
        if field_words(name):
            values[name] = field_word(name, value)
        elif field_type(name)[0] is bool:
            values[name] = bool(value)
        elif isinstance(value, tuple):
            values[name] = ",".join(value)
        elif value is None:
            values[name] = AUTO if field_choices(name) else ""
        else:
            values[name] = str(value)
    parallel = state.parallel
    values |= {"gpu_count": str(parallel.gpus), "strategy": parallel.strategy or AUTO, "offload": parallel.offload,
               HOST_RAM_KNOB: state.host_ram_text}
    return values


class KnobPanel(VerticalScroll, can_focus=False):
    """Every knob of the run, plus the model and the GPU.

    `shown` holds the raw value each widget shows, so the screen can tell a user's change
    from the echo of a value the panel set itself (Select re-announces its value on mount).
    The panel itself takes no focus: Tab stops only on the knobs (it scrolls to each).
    """

    def __init__(self, state: WhatIf, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shown = knob_values(state)

    def compose(self) -> ComposeResult:
        shown = self.shown
        models = [(spec.name, spec.name) for spec in list_models()]
        gpus = [(f"{gpu.key} ({gib(gpu.total_memory_bytes)} GiB)", gpu.key) for gpu in list_gpus()]
        yield _knob("model", "model", KnobSelect(models, value=shown["model"], prompt="(the path below)", compact=True,
                                             id=knob_id("model"), tooltip="type to search the catalog"))
        yield _knob("model_path", "  or path/id", KnobInput(shown["model_path"], compact=True, id=knob_id("model_path"),
                                                        placeholder="config.json, folder, HF id"))
        yield _knob("gpu", "GPU", KnobSelect(gpus, value=shown["gpu"], prompt="(the size below)", compact=True,
                                         id=knob_id("gpu"), tooltip="type to search the profiles"))
        yield _knob("gpu_size", "  or size", KnobInput(shown["gpu_size"], compact=True, id=knob_id("gpu_size"),
                                                   placeholder="24GiB or a .toml"))
        for name in MAIN_FIELDS:
            yield _knob(name, label(name), _field_widget(name, shown[name]))
        with Collapsible(title="more knobs", collapsed=True, id="more-knobs"):
            yield Label("more than one GPU (per-rank plan):", classes="knob-heading")
            for key, text in PARALLEL_LABELS.items():
                yield _knob(key, text, _parallel_widget(key, shown[key]))
            yield Label("the run:", classes="knob-heading")
            for name in RunConfig.model_fields:
                if name not in MAIN_FIELDS:
                    yield _knob(name, label(name), _field_widget(name, shown[name]))

    def show(self, state: WhatIf) -> None:
        """Put `state` into the widgets (an applied advice item) and clear the errors."""
        for key, value in knob_values(state).items():
            self.set_quietly(key, value)
            self.set_error(key, None)

    def set_quietly(self, key: str, value) -> None:
        """Show `value` in knob `key` without the widget announcing a change."""
        self.shown[key] = value
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            self.query_one(f"#{knob_id(key)}").value = value

    def choice(self, key: str) -> str:
        """The model or GPU text the user means: the free text if any, else the list's value."""
        text = str(self.shown[FREE_TEXT[key]]).strip()
        if not text and self.shown[key] is Select.NULL:
            raise InputError(key, "pick one from the list or type one in the box below it")
        return text or str(self.shown[key])

    def set_error(self, key: str, message: str | None) -> None:
        """Show `message` under knob `key` (None clears it); the widget turns red too."""
        line = self.query_one(f"#error-{key}", Static)
        line.update(message or "")
        line.set_class(bool(message), "-shown")
        self.query_one(f"#{knob_id(key)}").set_class(bool(message), "-invalid")

    def errors(self) -> dict[str, str]:
        """Knob key -> the error shown under it now."""
        return {line.id.removeprefix("error-"): str(line.content)
                for line in self.query(".knob-error.-shown").results(Static)}
