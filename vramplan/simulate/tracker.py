"""Follow every storage's allocation and free the way the CUDA caching allocator counts them.

A `TorchDispatchMode` sees each op's outputs; a new storage (keyed by its StorageImpl
pointer, as `torch.distributed._tools.mem_tracker` does) is recorded with its bytes rounded
up to 512 B (c10/cuda/CUDACachingAllocator.cpp, kMinBlockSize) and a `weakref.finalize` on
the storage's (preserved) Python object removes it when the last tensor using it dies.
Each phase keeps its own peak; the live set at a peak is snapshotted lazily, just before the
first free after it, so a long run of allocations costs one copy, not one per allocation.
"""
from __future__ import annotations

import itertools
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten

from vramplan.memory.xp import ALLOCATOR_BLOCK_BYTES

HOST = "host"  # tensors a CUDA run keeps on the CPU (AdamW's step counters)
PAGED = "paged_optimizer_state"  # CUDA managed memory: outside max_memory_allocated
UNCOUNTED = frozenset({HOST, PAGED})


def cuda_block_bytes(nbytes: int) -> int:
    """What `max_memory_allocated` counts for one storage; the allocator returns no block for 0 B."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // ALLOCATOR_BLOCK_BYTES) * ALLOCATOR_BLOCK_BYTES


class Allocation:
    """One live storage: its rounded bytes and a category that may be corrected later."""

    __slots__ = ("serial", "nbytes", "category", "origin")

    def __init__(self, serial: int, nbytes: int, category: str, origin: str = ""):
        self.serial, self.nbytes, self.category, self.origin = serial, nbytes, category, origin


class PhasePeak:
    __slots__ = ("bytes", "snapshot")

    def __init__(self, current: int, live):
        self.bytes = current
        self.snapshot = list(live)


class AllocationTracker(TorchDispatchMode):
    """Live bytes, per-phase peaks and the live set at each peak, by category."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, Allocation] = {}
        self.current = 0
        self.category = "activations"
        self.phase = None
        self.peaks: dict[str, PhasePeak] = {}
        self._pending_snapshot = False
        self._serials = itertools.count()
        self._op = "input"
        self.paged_bytes = 0

    # -- recording -------------------------------------------------------------------------
    def track(self, tensor: torch.Tensor, category: str | None = None) -> Allocation | None:
        """Record `tensor`'s storage if new; return its Allocation (new or existing). A wrapper
        subclass (a DTensor) holds no storage itself: its inner (local) tensor is recorded."""
        if is_traceable_wrapper_subclass(tensor):
            inner = [getattr(tensor, name) for name in tensor.__tensor_flatten__()[0]]
            found = [self.track(t, category) for t in inner if isinstance(t, torch.Tensor)]
            return found[0] if found else None
        storage = tensor.untyped_storage()
        key = storage._cdata
        found = self.live.get(key)
        if found is not None:
            return found
        nbytes = cuda_block_bytes(storage.nbytes())
        origin = f"{self._op} {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
        alloc = Allocation(next(self._serials), nbytes, category or self.category, origin)
        self.live[key] = alloc
        weakref.finalize(storage, self._free, key, alloc.serial)
        if alloc.category not in UNCOUNTED:
            self.current += nbytes
            self._raise_peak()
        return alloc

    def recategorize(self, tensor: torch.Tensor, category: str) -> None:
        alloc = self.track(tensor, category)
        if alloc.category == category:
            return
        if alloc.category in UNCOUNTED and category not in UNCOUNTED:
            self.current += alloc.nbytes
        elif alloc.category not in UNCOUNTED and category in UNCOUNTED:
            self.current -= alloc.nbytes
        alloc.category = category

    def resized(self, tensor: torch.Tensor) -> None:
        """`tensor`'s storage was resized in place (FSDP2 frees and re-allocates its unsharded
        parameters with `untyped_storage().resize_`, `_fsdp_param.free_storage`/`alloc_storage`):
        count its new size. No op reaches the dispatch mode for a storage resize. The storage gets
        a new Allocation (same serial) so that the live sets already snapshotted keep the old size."""
        key = tensor.untyped_storage()._cdata
        old = self.track(tensor)
        nbytes = cuda_block_bytes(tensor.untyped_storage().nbytes())
        if nbytes == old.nbytes:
            return
        counted = old.category not in UNCOUNTED
        if counted and nbytes < old.nbytes:
            self._snapshot_if_pending()
        self.live[key] = Allocation(old.serial, nbytes, old.category, old.origin)
        if counted:
            self.current += nbytes - old.nbytes
            self._raise_peak()

    def _snapshot_if_pending(self) -> None:
        if self._pending_snapshot:
            self.peaks[self.phase].snapshot = list(self.live.values())
            self._pending_snapshot = False

    def _free(self, key: int, serial: int) -> None:
        alloc = self.live.get(key)
        if alloc is None or alloc.serial != serial:
            return
        self._snapshot_if_pending()
        del self.live[key]
        if alloc.category not in UNCOUNTED:
            self.current -= alloc.nbytes

    def _raise_peak(self) -> None:
        if self.phase is None:
            return
        peak = self.peaks[self.phase]
        if self.current > peak.bytes:
            peak.bytes = self.current
            self._pending_snapshot = True

    def start_phase(self, name: str, category: str | None = None) -> None:
        self._close_phase()
        self.phase = name
        if category:
            self.category = category
        self.peaks[name] = PhasePeak(self.current, self.live.values())

    def _close_phase(self) -> None:
        self._snapshot_if_pending()

    def stop(self) -> None:
        self._close_phase()
        self.phase = None

    # -- reading -----------------------------------------------------------------------------
    def phase_categories(self, name: str) -> dict[str, int]:
        """Bytes by category of the live set at phase `name`'s peak."""
        out: dict[str, int] = {}
        for alloc in self.peaks[name].snapshot:
            if alloc.category not in UNCOUNTED:
                out[alloc.category] = out.get(alloc.category, 0) + alloc.nbytes
        return out

    def peak_allocations(self, name: str) -> list[Allocation]:
        """The counted allocations live at phase `name`'s peak, largest first (for explaining gaps)."""
        return sorted((a for a in self.peaks[name].snapshot if a.category not in UNCOUNTED), key=lambda a: -a.nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self._op = func.__name__
        for value in tree_flatten(result)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return result
