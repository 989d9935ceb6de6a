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


EXACT_VECTOR_BYTES = 1 << 51
"""Peaks below this are computed in int64/float64 arrays: float64 holds every integer below 2**53 and
int64 intermediates stay 2**12 below wrapping. Larger peaks (no GPU holds them: GPUSpec ends at
2**48 bytes) are computed one by one in Python ints, so a sweep never shows a wrapped number."""
MAX_GRID_CELLS = 200_000
"""A sweep's rows are built as Python dicts (about 1 KB each with the table), so 200,000 stay under ~200 MB."""
MAX_EXACT_CELLS = 4096
"""At most this many cells past EXACT_VECTOR_BYTES are computed one by one (about 1 ms each)."""


def _grid_sizes(run: RunConfig, batch, seq, rank, dtype) -> dict:
    sizes = {"micro_batch_size": np.asarray(batch, dtype=dtype)[:, None, None],
             "seq_len": np.asarray(seq, dtype=dtype)[None, :, None]}
    if run.uses_lora:
        sizes["lora_rank"] = np.asarray(rank, dtype=dtype)[None, None, :]
    return sizes


def grid_peaks(model: ModelSpec, gpu: GPUSpec, run: RunConfig, batch, seq, rank):
    """(peak_allocated, required) arrays of shape (len(batch), len(seq), len(rank)) for one run.

    int64 arrays, or object arrays of exact Python ints when some peak passes EXACT_VECTOR_BYTES.
    """
    dtypes = resolve_dtypes(run, gpu, model)
    shape = (len(batch), len(seq), len(rank))
    corner = {"micro_batch_size": int(max(batch)), "seq_len": int(max(seq))}
    if run.uses_lora:
        corner["lora_rank"] = int(max(rank))
    # The peak grows with batch, seq and rank, so the largest corner bounds every cell (exact, scalar).
    if int(peak_allocated_bytes(model, gpu, run, dtypes, **corner)) < EXACT_VECTOR_BYTES:
        sizes = _grid_sizes(run, batch, seq, rank, np.int64)
        peak = np.broadcast_to(np.asarray(peak_allocated_bytes(model, gpu, run, dtypes, **sizes), dtype=np.int64), shape)
        return peak, required_bytes(peak, run, gpu)
    return _exact_grid_peaks(model, gpu, run, dtypes, batch, seq, rank, shape)


def _exact_grid_peaks(model, gpu, run, dtypes, batch, seq, rank, shape):
    """grid_peaks when some cell is too large for int64/float64 arrays: those cells in Python ints."""
    # float64 inputs cannot wrap; they only say which cells are large (to within rounding).
    sizes = _grid_sizes(run, batch, seq, rank, np.float64)
    rough = np.broadcast_to(np.asarray(peak_allocated_bytes(model, gpu, run, dtypes, **sizes), dtype=np.float64), shape)
    large = ~(rough < EXACT_VECTOR_BYTES / 2)
    if int(large.sum()) > MAX_EXACT_CELLS:
        raise InputError("--batch/--seq/--rank", f"{int(large.sum()):,} configurations need over "
                         f"2**50 bytes; at most {MAX_EXACT_CELLS:,} such are computed (no GPU holds one)")
    with np.errstate(all="ignore"):  # the large cells wrap here; each cell is computed on its own, so the rest stay exact
        sizes = _grid_sizes(run, batch, seq, rank, np.int64)
        vector = np.broadcast_to(np.asarray(peak_allocated_bytes(model, gpu, run, dtypes, **sizes)), shape)
        small = np.where(large, 0, vector).astype(np.int64)
    peak = small.astype(object)
    for i, j, k in zip(*np.nonzero(large)):
        cell = {"micro_batch_size": int(batch[i]), "seq_len": int(seq[j])}
        if run.uses_lora:
            cell["lora_rank"] = int(rank[k])
        peak[i, j, k] = int(peak_allocated_bytes(model, gpu, run, dtypes, **cell))
    required = np.empty(shape, dtype=object)
    required.ravel()[...] = [required_bytes(value, run, gpu) for value in peak.ravel().tolist()]
    return peak, required


def sweep(model: ModelSpec, gpu: GPUSpec, run: RunConfig, *, batch=None, seq=None, rank=None,
          method=None, max_cells: int = MAX_GRID_CELLS) -> SweepResult:
    """Every combination of `batch` x `seq` x `rank` x `method` (None: the run's own value).

    Methods without LoRA (full, inference) contribute one row per batch x seq, rank 0. A grid of
    more than `max_cells` is refused: the default bounds what the CLI turns into rows; the columns
    alone cost about 80 B a configuration, so a caller that keeps to them may allow more.
    """
    batch = _sizes(batch, run.micro_batch_size, "batch")
    seq = _sizes(seq, run.seq_len, "seq")
    ranks = _sizes(rank, run.lora_rank, "rank")
    methods = [run.method] if method is None else list(method)
    cells = len(batch) * len(seq) * len(ranks) * len(methods)
    if cells > max_cells:
        raise InputError("--batch/--seq/--rank/--method", f"the grid has {cells:,} configurations; "
                         f"at most {max_cells:,} (split the sweep)")
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
        parts["fits"].append((required.ravel() <= gpu.capacity_bytes).astype(bool) & _runnable(model, gpu, method_run))
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
