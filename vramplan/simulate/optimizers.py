"""The optimizers of a run, on fake tensors.

torch's AdamW (foreach, or fused), SGD and transformers' Adafactor run for real. bitsandbytes'
8-bit and paged optimizers do not run on fake tensors, so `BnbShapedAdam` allocates their state
with bitsandbytes' shapes (bitsandbytes/optim/optimizer.py, `init_state`/`get_state_buffer`):
uint8 state1/state2 + fp32 absmax per 256 elements for tensors of at least 4096 elements,
fp32 state otherwise, the two 256-entry fp32 quantization maps once; paged buffers (tensors
of at least 1e5 elements) are marked PAGED, outside `max_memory_allocated`. Their update
kernels work in place, so `step` allocates nothing.
"""
from __future__ import annotations

import torch

from vramplan.memory.optimizer import BNB_8BIT_BLOCKSIZE, MIN_8BIT_SIZE, MIN_PAGED_SIZE
from vramplan.simulate.tracker import HOST, PAGED


class BnbShapedAdam(torch.optim.Optimizer):
    def __init__(self, params, *, eight_bit: bool, paged: bool):
        super().__init__(params, {"lr": 1e-4})
        self.eight_bit, self.paged = eight_bit, paged
        self.categories: dict[int, str] = {}  # id(state tensor) -> tracker category

    @torch.no_grad()
    def step(self, closure=None):
        if not self.state and self.eight_bit:
            first = self.param_groups[0]["params"][0]
            self.qmaps = [first.new_empty(256, dtype=torch.float32) for _ in range(2)]
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None or param in self.state:
                    continue
                numel = param.numel()
                paged = self.paged and numel >= MIN_PAGED_SIZE
                state = {}
                if self.eight_bit and numel >= MIN_8BIT_SIZE:
                    for i in (1, 2):
                        state[f"state{i}"] = param.new_empty(param.shape, dtype=torch.uint8)
                        state[f"absmax{i}"] = param.new_empty(-(-numel // BNB_8BIT_BLOCKSIZE), dtype=torch.float32)
                        self.categories[id(state[f"state{i}"])] = PAGED if paged else "optimizer_state"
                else:
                    for i in (1, 2):
                        state[f"state{i}"] = param.new_empty(param.shape, dtype=torch.float32)
                        self.categories[id(state[f"state{i}"])] = PAGED if paged else "optimizer_state"
                self.state[param] = state


def make_optimizer(name: str, params):
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4, foreach=True)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False, warmup_init=False)
    if name in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw"):
        return BnbShapedAdam(params, eight_bit="8bit" in name, paged=name.startswith("paged"))
    raise ValueError(f"unknown optimizer {name}")


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
