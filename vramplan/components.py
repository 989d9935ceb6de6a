"""Every Breakdown component as one entry: its name, label, colours and whether PyTorch counts it.

The spec (`specs.breakdown.Breakdown`), the plan, `fit`, `explain`, the report, the plots and
the TUI all read this registry; none keeps its own list. Adding a component is one entry
here plus its terms in `vramplan.memory.plan.phase_terms` (README, "Adding a memory component").

`allocated` says whether the bytes are inside `torch.cuda.max_memory_allocated()`: the
allocated components sum to the plan's `peak_allocated_bytes`; the others (the caching
allocator's reserve and the CUDA context) are what the verdict adds on top, and each names
the Breakdown field that holds its bytes. The order here is the order of every table, bar
and legend (allocated first, bottom of the stack first).

Plot colours are the Okabe-Ito palette (`plots.style`), each with a hatch so greyscale prints
still differ; TUI colours are Rich colour names.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    name: str
    label: str
    plot_colour: str
    plot_hatch: str
    tui_colour: str
    allocated: bool = True
    at_load: bool = False  # allocated once the model is built and prepared, before the first step
    base_weights: bool = False  # holds the frozen base model's own weights (not adapters, not training state)
    breakdown_field: str = ""  # not allocated: the Breakdown field that holds its bytes

    @property
    def short_label(self) -> str:
        """The label without its parenthesis: 'quantized weights' for the bar's legend."""
        return self.label.split(" (")[0]


_REGISTRY: list[Component] = [
    Component("quantized_weights", "quantized weights (packed codes)", "#0072B2", "", "dodger_blue1", at_load=True, base_weights=True),
    Component("quant_state", "quantization state (absmax, maps)", "#56B4E9", "....", "deep_sky_blue4", at_load=True, base_weights=True),
    Component("float_weights", "float weights (embeddings, norms, ...)", "#009E73", "//", "steel_blue1", at_load=True, base_weights=True),
    Component("lora_adapters", "LoRA adapters", "#F0E442", "oo", "green3", at_load=True),
    Component("gradients", "gradients", "#E69F00", "--", "chartreuse3"),
    Component("optimizer_state", "optimizer state", "#CC79A7", "xx", "gold1"),
    Component("optimizer_step_temp", "optimizer step temporaries", "#F3D3E4", "++", "dark_goldenrod"),
    Component("activations", "activations", "#D55E00", "\\\\", "magenta"),
    Component("logits_loss", "logits + loss", "#FFD8A8", "||", "orchid1"),
    Component("kv_cache", "KV cache", "#56B4E9", "**", "medium_purple1"),
    Component("cublas_workspace", "cuBLAS workspace", "#BBBBBB", "..", "grey62"),
    Component("gathered_parameters", "gathered parameters (unsharded units in flight)", "#88CCEE", "x.", "cyan"),
    Component("comm_buckets", "communication buckets (gradient reduce, all-gather)", "#AA4499", "-.", "plum2"),
    Component("allocator_reserve", "allocator reserve (reserved - allocated)", "#E8E8E8", "/", "grey50",
              allocated=False, breakdown_field="allocator_reserve_bytes"),
    Component("cuda_context", "CUDA context (outside PyTorch)", "#999999", "", "grey37",
              allocated=False, breakdown_field="cuda_context_bytes"),
    Component("nccl_buffers", "NCCL buffers (outside PyTorch)", "#666666", "\\.", "grey30",
              allocated=False, breakdown_field="nccl_buffers_bytes"),
]


def all_components() -> tuple[Component, ...]:
    """Every component in display order: the allocated ones, then those outside max_memory_allocated."""
    return tuple(entry for entry in _REGISTRY if entry.allocated) + tuple(e for e in _REGISTRY if not e.allocated)


def allocated_names() -> tuple[str, ...]:
    """Names of the components inside `torch.cuda.max_memory_allocated()`, in order."""
    return tuple(entry.name for entry in _REGISTRY if entry.allocated)


def base_weight_names() -> tuple[str, ...]:
    """Names of the components that hold the base model's weights in their storage format."""
    return tuple(entry.name for entry in _REGISTRY if entry.base_weights)


def component(name: str) -> Component | None:
    return next((entry for entry in _REGISTRY if entry.name == name), None)


def label(name: str) -> str:
    """The component's label; a name the registry does not know (a simulator category) reads with spaces."""
    entry = component(name)
    return entry.label if entry else name.replace("_", " ")


def order(name: str) -> int:
    """Position of `name` in display order; names the registry does not know come last."""
    names = [entry.name for entry in all_components()]
    return names.index(name) if name in names else len(names)


@contextmanager
def registered(entry: Component) -> Iterator[Component]:
    """`entry` in the registry for the duration of a `with` block (tests, experiments); an
    allocated entry joins the end of the allocated ones. A permanent component is an entry
    in `_REGISTRY` above."""
    if component(entry.name) is not None:
        raise ValueError(f"component {entry.name!r} is already registered")
    if entry.allocated == bool(entry.breakdown_field):
        raise ValueError("an allocated component has no breakdown_field; one outside max_memory_allocated needs one")
    _REGISTRY.append(entry)
    try:
        yield entry
    finally:
        _REGISTRY.remove(entry)
