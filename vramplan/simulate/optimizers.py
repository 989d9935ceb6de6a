"""The optimizers of a run, on fake tensors.

torch's AdamW (foreach, or fused), SGD and transformers' Adafactor run for real. bitsandbytes'
8-bit and paged optimizers do not run on fake tensors, so `BnbShapedAdam` allocates their state
with bitsandbytes' shapes (bitsandbytes/optim/optimizer.py, `init_state`/`get_state_buffer`),
the sizes taken from the optimizer's registry entry: uint8 state1/state2 + fp32 absmax per 256
elements for tensors of at least `min_8bit_size` (4096) elements, fp32 state otherwise, the two
256-entry fp32 quantization maps once; paged buffers (tensors of at least `min_paged_size`, 1e5,
elements) are marked PAGED, outside `max_memory_allocated`. Their update
kernels work in place, so `step` allocates nothing.
"""
from __future__ import annotations

import torch

from vramplan.optimizers import BNB_8BIT_BLOCKSIZE, OptimizerEntry, get_optimizer, optimizer_class
from vramplan.simulate.tracker import HOST, PAGED


class BnbShapedAdam(torch.optim.Optimizer):
    def __init__(self, params, entry: OptimizerEntry):
        super().__init__(params, {"lr": 1e-4})
        self.entry = entry
        self.categories: dict[int, str] = {}  # id(state tensor) -> tracker category

    @torch.no_grad()
    def step(self, closure=None):
        entry = self.entry
        if not self.state and entry.eight_bit:
            first = self.param_groups[0]["params"][0]
            self.qmaps = [first.new_empty(256, dtype=torch.float32) for _ in range(2)]
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None or param in self.state:
                    continue
                numel = param.numel()
                paged = entry.paged and numel >= entry.min_paged_size
                state = {}
                if entry.eight_bit and numel >= entry.min_8bit_size:
                    for i in range(1, entry.state_tensors + 1):
                        state[f"state{i}"] = param.new_empty(param.shape, dtype=torch.uint8)
                        state[f"absmax{i}"] = param.new_empty(-(-numel // BNB_8BIT_BLOCKSIZE), dtype=torch.float32)
                        self.categories[id(state[f"state{i}"])] = PAGED if paged else "optimizer_state"
                else:
                    for i in range(1, entry.state_tensors + 1):
                        state[f"state{i}"] = param.new_empty(param.shape, dtype=torch.float32)
                        self.categories[id(state[f"state{i}"])] = PAGED if paged else "optimizer_state"
                self.state[param] = state


def make_optimizer(name: str, params):
    """The optimizer registry entry `name` constructs: its library class on the fake tensors, or
    `BnbShapedAdam` in bitsandbytes' shapes where the library cannot run on them."""
    entry = get_optimizer(name)
    params = list(params)
    if entry.simulated_by == "bnb_shaped":
        return BnbShapedAdam(params, entry)
    return optimizer_class(entry)(params, lr=1e-4, **dict(entry.class_kwargs))


def state_categories(optimizer):
    """Yield (state tensor, tracker category) for every tensor the optimizer keeps."""
    fused = bool(optimizer.defaults.get("fused"))
    for state in optimizer.state.values():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if key == "step" and not fused:  # foreach/for-loop AdamW keeps step on the CPU
                yield value, HOST
            elif isinstance(optimizer, BnbShapedAdam):
                yield value, optimizer.categories.get(id(value), "optimizer_state")
            else:
                yield value, "optimizer_state"
    for qmap in getattr(optimizer, "qmaps", ()):
        yield qmap, "optimizer_state"
