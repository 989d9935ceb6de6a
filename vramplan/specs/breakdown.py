"""Breakdown: the planner's answer, every byte named.

The allocated components are those live at the peak phase; together they predict
`torch.cuda.max_memory_allocated()`. The verdict adds what that number does not see:
the allocator's reserve (reserved - allocated) and the CUDA context.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from vramplan.specs.run import RunConfig


class Breakdown(BaseModel):
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
    headroom_bytes: int
    fits: bool
    notes: tuple[str, ...] = ()

    def components(self) -> dict[str, int]:
        """Allocated components at the peak, then the costs outside max_memory_allocated."""
        from vramplan.memory.plan import ALLOCATED_COMPONENTS

        parts = {name: getattr(self, name) for name in ALLOCATED_COMPONENTS}
        parts["allocator_reserve"] = self.allocator_reserve_bytes
        parts["cuda_context"] = self.cuda_context_bytes
        return parts
