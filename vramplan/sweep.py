"""Sweep a grid of micro-batch x sequence x LoRA rank (x method) through the memory model at once.

One call of the vectorized `peak_allocated_bytes` per method: the three sizes enter as
broadcast numpy axes (b[:, None, None], s[None, :, None], r[None, None, :]), so per-token and
per-rank terms are computed on the short axes and only combined on the full grid; what
depends on none of them (weights, quantization state) is computed once. The verdict is
`memory.overhead.required_bytes`, the rule `plan` uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.overhead import required_bytes
from vramplan.memory.plan import peak_allocated_bytes
from vramplan.specs import GPUSpec, ModelSpec, RunConfig

COLUMNS = ("method", "micro_batch_size", "seq_len", "lora_rank", "peak_allocated_bytes",
           "required_bytes", "headroom_bytes", "fits")


@dataclass(frozen=True)
class SweepResult:
    """Column arrays, one row per configuration; `lora_rank` is 0 where the method has no LoRA."""

    model: str
    gpu: str
    capacity_bytes: int
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["fits"])

    def records(self) -> list[dict]:
        """Rows as plain dicts of Python values (JSON-ready)."""
        names = list(self.columns)
        lists = [self.columns[name].tolist() for name in names]
        return [dict(zip(names, row)) for row in zip(*lists)]


def _sizes(values, default: int, name: str) -> np.ndarray:
    array = np.asarray([default] if values is None else list(values), dtype=np.int64).ravel()
    if array.size == 0 or (array <= 0).any():
        raise InputError(name, "give one or more positive integers")
    return array


def grid_peaks(model: ModelSpec, gpu: GPUSpec, run: RunConfig, batch, seq, rank):
    """(peak_allocated, required) arrays of shape (len(batch), len(seq), len(rank)) for one run."""
    dtypes = resolve_dtypes(run, gpu, model)
    b = np.asarray(batch, dtype=np.int64)[:, None, None]
    s = np.asarray(seq, dtype=np.int64)[None, :, None]
    r = np.asarray(rank, dtype=np.int64)[None, None, :]
    sizes = {"micro_batch_size": b, "seq_len": s}
    if run.uses_lora:
        sizes["lora_rank"] = r
    shape = (b.shape[0], s.shape[1], r.shape[2])
    peak = np.broadcast_to(np.asarray(peak_allocated_bytes(model, gpu, run, dtypes, **sizes), dtype=np.int64), shape)
    return peak, required_bytes(peak, run, gpu)


def sweep(model: ModelSpec, gpu: GPUSpec, run: RunConfig, *, batch=None, seq=None, rank=None,
          method=None) -> SweepResult:
    """Every combination of `batch` x `seq` x `rank` x `method` (None: the run's own value).

    Methods without LoRA (full, inference) contribute one row per batch x seq, rank 0.
    """
    batch = _sizes(batch, run.micro_batch_size, "batch")
    seq = _sizes(seq, run.seq_len, "seq")
    ranks = _sizes(rank, run.lora_rank, "rank")
    methods = [run.method] if method is None else list(method)
    parts = {name: [] for name in COLUMNS}
    for name in methods:
        method_run = run.model_copy(update={"method": name})
        method_ranks = ranks if method_run.uses_lora else np.zeros(1, dtype=np.int64)
        peak, required = grid_peaks(model, gpu, method_run, batch, seq, method_ranks)
        grid_b, grid_s, grid_r = np.meshgrid(batch, seq, method_ranks, indexing="ij")
        parts["method"].append(np.full(peak.size, name, dtype=object))
        parts["micro_batch_size"].append(grid_b.ravel())
        parts["seq_len"].append(grid_s.ravel())
        parts["lora_rank"].append(grid_r.ravel())
        parts["peak_allocated_bytes"].append(peak.ravel())
        parts["required_bytes"].append(required.ravel())
        parts["headroom_bytes"].append(gpu.capacity_bytes - required.ravel())
        parts["fits"].append((required.ravel() <= gpu.capacity_bytes) & _runnable(model, gpu, method_run))
    columns = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    return SweepResult(model=model.name, gpu=gpu.name, capacity_bytes=gpu.capacity_bytes, columns=columns)


def _runnable(model, gpu, run) -> bool:
    """False where the GPU cannot run the method at all (`estimate.blocked_by`, e.g. bitsandbytes on Apple)."""
    from vramplan.estimate import blocked_by

    return not blocked_by(gpu, run, resolve_dtypes(run, gpu, model))


def count_fitting(model: ModelSpec, gpu: GPUSpec, run: RunConfig, batch, seq, rank) -> int:
    """How many grid points fit, without building row columns (the benchmark's hot path)."""
    _peak, required = grid_peaks(model, gpu, run, batch, seq, rank if run.uses_lora else [0])
    return int((required <= gpu.capacity_bytes).sum()) if _runnable(model, gpu, run) else 0


__all__ = ["COLUMNS", "SweepResult", "count_fitting", "grid_peaks", "sweep"]
