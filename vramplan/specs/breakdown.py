"""Breakdown: the planner's answer, every byte named.

The allocated components are those live at the peak phase; together they predict
`torch.cuda.max_memory_allocated()`. The verdict adds what that number does not see:
the allocator's reserve (reserved - allocated) and the CUDA context.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

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

    quantized_weights: int = 0
    quant_state: int = 0
    float_weights: int = 0
    lora_adapters: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    optimizer_step_temp: int = 0
    activations: int = 0
    logits_loss: int = 0
    kv_cache: int = 0
    cublas_workspace: int = 0

    peak_phase: str
    terms: dict[str, tuple[dict, ...]] = {}
    """Per allocated component at the peak, the named terms it sums (`vramplan.memory.terms.as_dict`):
    name, formula, factors [[label, value]], bytes, source, rounding."""
    phase_peaks: dict[str, int]
    peak_allocated_bytes: int
    allocator_reserve_bytes: int
    cuda_context_bytes: int
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
        """Allocated components at the peak, then the costs outside max_memory_allocated."""
        from vramplan.memory.plan import ALLOCATED_COMPONENTS

        parts = {name: getattr(self, name) for name in ALLOCATED_COMPONENTS}
        parts["allocator_reserve"] = self.allocator_reserve_bytes
        parts["cuda_context"] = self.cuda_context_bytes
        return parts
