"""Breakdown: the planner's answer, every byte named.

The allocated components are those live at the peak phase; together they predict
`torch.cuda.max_memory_allocated()`. The verdict adds what that number does not see:
the allocator's reserve (reserved - allocated) and the CUDA context.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from vramplan import components as registry
from vramplan.specs.run import RunConfig


class Breakdown(BaseModel):
    """A plan: bytes of every component at the peak phase, the verdict and why.

    `peak_allocated_bytes` predicts `torch.cuda.max_memory_allocated()`; `required_bytes`
    adds the allocator reserve and the CUDA context; the run `fits` when required +
    `margin_bytes` <= `capacity_bytes` (so `headroom_bytes` = capacity - required - margin
    >= 0) and nothing in `blocked_by` stops the GPU from running it. `components()` names
    every byte; `notes` say what was assumed, `warnings` what may go wrong.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    gpu: str
    run: RunConfig
    compute_dtype: str
    weight_format: str
    total_parameters: int
    trainable_parameters: int

    component_bytes: dict[str, int] = {}
    """Bytes of every allocated component at the peak, keyed by its registry name (`vramplan.components`).
    Each is also an attribute (`breakdown.activations`) and a top-level key of `model_dump()`, 0 when absent;
    the constructor takes them as keywords (`Breakdown(activations=..., ...)`)."""

    peak_phase: str
    terms: dict[str, tuple[dict, ...]] = {}
    """Per allocated component at the peak, the named terms it sums (`vramplan.memory.terms.as_dict`):
    name, formula, factors [[label, value]], bytes, source, rounding; multi-GPU plans also name the
    NCCL buffers' terms ("nccl_buffers", outside the allocator)."""
    phase_peaks: dict[str, int]
    peak_allocated_bytes: int
    allocator_reserve_bytes: int
    cuda_context_bytes: int
    nccl_buffers_bytes: int = 0  # NCCL communicators' buffers (multi-GPU plans; vramplan.distributed.buffers)
    paged_optimizer_bytes: int = 0
    required_bytes: int
    capacity_bytes: int
    margin_bytes: int = 0
    headroom_bytes: int
    fits: bool
    blocked_by: str = ""
    reason: str = ""  # why it does not fit, when one component or assumption dominates (vramplan.reasons)
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    stack: dict[str, str | bool] = {}  # library versions, their source, recipe and rules (vramplan.stack.notes)

    @property
    def verdict(self) -> str:
        """FITS, DOES NOT FIT (memory) or CANNOT RUN HERE (`blocked_by`): the word every shell prints."""
        if self.fits:
            return "FITS"
        return "CANNOT RUN HERE" if self.blocked_by else "DOES NOT FIT"

    def __repr__(self) -> str:
        verdict = "fits" if self.fits else ("cannot run" if self.blocked_by else "does not fit")
        return (f"Breakdown({self.model} on {self.gpu}, {self.run.method}: {verdict}, "
                f"peak {self.peak_allocated_bytes / 2**30:.2f} GiB, needs {self.required_bytes / 2**30:.2f} "
                f"of {self.capacity_bytes / 2**30:.2f} GiB, headroom {self.headroom_bytes / 2**30:.2f} GiB)")

    __str__ = __repr__

    def components(self) -> dict[str, int]:
        """Every registered component in order: allocated at the peak, then the costs outside max_memory_allocated."""
        return {entry.name: self.component_bytes.get(entry.name, 0) if entry.allocated
                else getattr(self, entry.breakdown_field) for entry in registry.all_components()}

    @model_validator(mode="before")
    @classmethod
    def _gather_component_keywords(cls, data):
        """Allocated components given as keywords (or top-level keys of a dump) go into `component_bytes`."""
        if not isinstance(data, dict):
            return data
        names = registry.allocated_names()
        data = dict(data)
        parts = dict(data.pop("component_bytes", None) or {})
        unknown = sorted(set(parts) - set(names))
        if unknown:
            raise ValueError(f"component_bytes: {', '.join(unknown)} not in the registry (vramplan.components)")
        for name in names:
            if name in data:
                parts[name] = data.pop(name)
        data["component_bytes"] = {name: parts.get(name, 0) for name in names}
        return data

    @model_serializer(mode="wrap")
    def _dump_components_as_keys(self, handler):
        """Today's dump: one top-level key per allocated component, after `trainable_parameters`."""
        dumped = handler(self)
        if not isinstance(dumped, dict) or "component_bytes" not in dumped:
            return dumped
        parts = dumped.pop("component_bytes")
        ordered = {}
        for key, value in dumped.items():
            ordered[key] = value
            if key == "trainable_parameters":
                ordered.update({name: parts.get(name, 0) for name in registry.allocated_names()})
        return ordered

    def __getattr__(self, name: str):
        parts = self.__dict__.get("component_bytes")
        if parts is not None and name in registry.allocated_names():
            return parts.get(name, 0)
        return super().__getattr__(name)
