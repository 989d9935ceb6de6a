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

from vramplan.memory.terms import FLOOR, term
from vramplan.memory.xp import as_int


def allocator_reserve_bytes(peak_allocated_bytes, fragmentation: float):
    return peak_allocated_bytes * fragmentation


def overhead_terms(peak_allocated_bytes, run, gpu) -> dict:
    """The two costs outside `max_memory_allocated` as terms: int(fragmentation x peak) and the GPU profile's context."""
    return {
        "allocator_reserve": term("allocator reserve", "fragmentation x peak allocated",
                                  (("fragmentation", run.fragmentation), ("B peak", peak_allocated_bytes)),
                                  "our estimate, checked in validation/results/", rounding=FLOOR),
        "cuda_context": term("CUDA context", "GPU profile field", (("B", gpu.cuda_context_bytes),),
                             "nvidia-smi minus max_memory_allocated"),
    }


def required_bytes(peak_allocated_bytes, run, gpu):
    """The verdict rule: required = allocated peak + int(fragmentation x peak) + CUDA context.

    A run fits when required <= `gpu.capacity_bytes`. The one place this rule lives: `plan`
    and the vectorized solvers/sweeps both call it (ints or numpy arrays).
    """
    reserve = as_int(allocator_reserve_bytes(peak_allocated_bytes, run.fragmentation))
    return peak_allocated_bytes + reserve + gpu.cuda_context_bytes
