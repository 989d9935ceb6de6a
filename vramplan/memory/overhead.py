"""Fixed costs and allocator behaviour around the tensors themselves.

- cuBLAS workspace: allocated through the caching allocator, so inside
  `max_memory_allocated` (aten/src/ATen/cuda/CublasHandlePool.cpp, default
  CUBLAS_WORKSPACE_CONFIG); its size is a GPU profile field.
- CUDA context: driver state and loaded kernels; nvidia-smi shows it,
  `max_memory_allocated` does not. A GPU profile field.
- Allocator reserve: the caching allocator holds whole segments, so reserved exceeds
  allocated; we reserve `fragmentation` x the allocated peak (our estimate, checked against
  `max_memory_reserved - max_memory_allocated` in validation/results/).
"""
from __future__ import annotations

from vramplan.memory.xp import as_int


def allocator_reserve_bytes(peak_allocated_bytes, fragmentation: float):
    return peak_allocated_bytes * fragmentation


def required_bytes(peak_allocated_bytes, run, gpu):
    """The verdict rule: required = allocated peak + int(fragmentation x peak) + CUDA context.

    A run fits when required <= `gpu.capacity_bytes`. The one place this rule lives: `plan`
    and the vectorized solvers/sweeps both call it (ints or numpy arrays).
    """
    reserve = as_int(allocator_reserve_bytes(peak_allocated_bytes, run.fragmentation))
    return peak_allocated_bytes + reserve + gpu.cuda_context_bytes
