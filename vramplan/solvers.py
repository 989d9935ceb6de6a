"""The most that fits: largest micro-batch, sequence length and LoRA rank; smallest GPU; largest model.

Sizes are solved, not guessed. Every answer `x` satisfies: the plan at `x` fits and the plan
at `x + 1` does not (or `x` is the limit). Memory never decreases as batch or sequence grow
(every term is a non-negative multiple of tokens, or eager attention's s^2), so those are
found by a search over the vectorized model: powers of two first, then a 64-way split of the
last gap (`peak_allocated_bytes` on a numpy array, 4-5 calls in all). LoRA rank is not
monotone everywhere — bitsandbytes' 8-bit and paged optimizers switch a tensor's state
format at fixed element counts — so rank is solved by evaluating every rank up to the limit
in one vectorized call. The verdict is `memory.overhead.required_bytes`, the rule `plan` uses.
"""
from __future__ import annotations

import numpy as np

from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.overhead import required_bytes
from vramplan.memory.plan import peak_allocated_bytes
from vramplan.specs import GPUSpec, ModelSpec, RunConfig

SIZE_FIELDS = {"batch": "micro_batch_size", "seq": "seq_len", "rank": "lora_rank"}
_SPLIT = 64


def fits_many(model: ModelSpec, gpu: GPUSpec, run: RunConfig, dtypes=None, **sizes) -> np.ndarray:
    """Boolean array: does the run fit at each of `sizes` (micro_batch_size/seq_len/lora_rank arrays)?"""
    dtypes = dtypes or resolve_dtypes(run, gpu)
    peak = peak_allocated_bytes(model, gpu, run, dtypes, **sizes)
    return np.asarray(required_bytes(peak, run, gpu) <= gpu.capacity_bytes)


def largest_monotone(fits, limit: int) -> int:
    """Largest x in [1, limit] with fits(x), for a fits() that turns False once and stays False.

    `fits` takes an int64 array of candidates and returns a boolean array. Returns 0 when
    even 1 does not fit. The result always fits and result + 1 does not (or is past limit).
    """
    if limit < 1:
        return 0
    candidates = np.unique(np.append(1 << np.arange(int(limit).bit_length()), limit)).astype(np.int64)
    candidates = candidates[candidates <= limit]
    ok = fits(candidates)
    if not ok[0]:
        return 0
    if ok.all():
        return int(limit)
    first_bad = int(np.argmin(ok))
    low, high = int(candidates[first_bad - 1]), int(candidates[first_bad])
    while high - low > 1:  # invariant: low fits, high does not
        inner = np.unique(np.linspace(low, high, _SPLIT + 2).astype(np.int64))[1:-1]
        inner = inner[(inner > low) & (inner < high)]
        ok = fits(inner)
        if ok.all():
            low = int(inner[-1])
            continue
        first_bad = int(np.argmin(ok))
        high = int(inner[first_bad])
        if first_bad:
            low = int(inner[first_bad - 1])
    return low


def max_micro_batch(model: ModelSpec, gpu: GPUSpec, run: RunConfig, limit: int = 4096) -> int:
    """Largest micro-batch size that fits (0 when batch 1 does not)."""
    dtypes = resolve_dtypes(run, gpu)
    return largest_monotone(lambda b: fits_many(model, gpu, run, dtypes, micro_batch_size=b), limit)


def max_seq_len(model: ModelSpec, gpu: GPUSpec, run: RunConfig, limit: int = 1_048_576) -> int:
    """Largest sequence length (prompt tokens for inference) that fits (0 when 1 token does not)."""
    dtypes = resolve_dtypes(run, gpu)
    return largest_monotone(lambda s: fits_many(model, gpu, run, dtypes, seq_len=s), limit)


def max_lora_rank(model: ModelSpec, gpu: GPUSpec, run: RunConfig, limit: int = 4096) -> int:
    """Largest LoRA rank that fits (0 when rank 1 does not); every rank up to `limit` is checked."""
    if not run.uses_lora:
        raise InputError("method", f"LoRA rank applies to qlora and lora runs (got {run.method})")
    if limit < 1:
        return 0
    ranks = np.arange(1, int(limit) + 1, dtype=np.int64)
    ok = fits_many(model, gpu, run, lora_rank=ranks)
    fitting = np.flatnonzero(ok)
    return int(ranks[fitting[-1]]) if fitting.size else 0


def max_size(dimension: str, model: ModelSpec, gpu: GPUSpec, run: RunConfig, limit: int | None = None) -> int:
    """`max_micro_batch`, `max_seq_len` or `max_lora_rank` by name: batch, seq or rank."""
    solvers = {"batch": max_micro_batch, "seq": max_seq_len, "rank": max_lora_rank}
    if dimension not in solvers:
        raise InputError("dimension", f"unknown '{dimension}'; allowed: batch, seq, rank")
    if limit is None:
        return solvers[dimension](model, gpu, run)
    return solvers[dimension](model, gpu, run, limit=limit)


def _plan_or_none(model, gpu, run):
    """The plan, or None when the run cannot run on that GPU/model at all (e.g. bf16 on a T4)."""
    from vramplan.estimate import plan

    try:
        return plan(model, gpu, run)
    except InputError:
        return None


def smallest_gpu(model: ModelSpec, run: RunConfig, gpus: list[GPUSpec] | None = None) -> GPUSpec | None:
    """The GPU with the least capacity (of `gpus`, default every profile) on which the run fits."""
    if gpus is None:
        from vramplan.gpus import list_gpus

        gpus = list_gpus()
    for gpu in sorted(gpus, key=lambda g: (g.capacity_bytes, g.key)):
        result = _plan_or_none(model, gpu, run)
        if result is not None and result.fits:
            return gpu
    return None


def largest_model(gpu: GPUSpec, run: RunConfig, models: list[ModelSpec] | None = None) -> ModelSpec | None:
    """The model with the most parameters (of `models`, default the catalog) whose run fits on `gpu`."""
    from vramplan.memory.parameters import parameter_count

    if models is None:
        from vramplan.catalog import list_models

        models = list_models()
    for model in sorted(models, key=lambda m: (-parameter_count(m), m.name)):
        result = _plan_or_none(model, gpu, run)
        if result is not None and result.fits:
            return model
    return None


__all__ = [
    "SIZE_FIELDS", "fits_many", "largest_monotone", "max_micro_batch", "max_seq_len", "max_lora_rank",
    "max_size", "smallest_gpu", "largest_model",
]
