"""Optimizer state and the temporaries of one optimizer step.

Per tensor, because bitsandbytes decides per tensor: 8-bit state only for tensors of at
least `min_8bit_size` = 4096 elements, paged (CUDA managed) buffers only for tensors of
at least 1e5 elements (bitsandbytes/optim/optimizer.py, `get_state_buffer`, `init_state`).
Paged state is invisible to `torch.cuda.max_memory_allocated`; it is returned separately.
"""
from __future__ import annotations

from vramplan.memory.terms import ALLOCATION, term
from vramplan.memory.xp import allocation_bytes, ceil_div, maximum, where

MIN_8BIT_SIZE = 4096
MIN_PAGED_SIZE = 100_000
BNB_8BIT_BLOCKSIZE = 256  # blockwise 8-bit optimizer state (bitsandbytes >= 0.44)
DYNAMIC_MAP_BYTES = 256 * 4  # qmap1 / qmap2, shared by all tensors


def _adam_8bit_tensor(numel, paged: bool):
    """(device bytes, paged bytes) of one tensor's 8-bit Adam state: 2 x uint8 + 2 x fp32 absmax/256."""
    absmax = 2 * allocation_bytes(ceil_div(numel, BNB_8BIT_BLOCKSIZE) * 4)
    codes = 2 * numel
    is_8bit = numel >= MIN_8BIT_SIZE
    is_paged = (numel >= MIN_PAGED_SIZE) & paged
    fp32_state = 2 * allocation_bytes(numel * 4)
    device = where(is_8bit, absmax + where(is_paged, 0, 2 * allocation_bytes(numel)), fp32_state)
    paged_bytes = where(is_8bit & is_paged, codes, 0)
    return device, paged_bytes


def optimizer_state_bytes(optimizer: str, groups, param_bytes: int):
    """(device bytes, paged bytes) of optimizer state for trainable tensor groups.

    adamw: exp_avg + exp_avg_sq in the parameter dtype = 2 x P (torch/optim/adamw.py; the
    step counter is a CPU scalar). 32-bit bitsandbytes state is always fp32: 2 x 4 B.
    8-bit: 2 x 1 B + 2 x 4 B per 256 (the NOTES' 2.03125 B/param). sgd_momentum: 1 x P.
    adafactor (transformers.optimization.Adafactor, beta1=None): factored row+col second
    moment for matrices, full second moment for vectors, always fp32 (`.to(grad)` after
    `grad.float()`), plus the 0-dim `state["RMS"]` tensor of each parameter.
    """
    device = paged = 0
    for g in groups:
        numel = g.rows * g.cols
        if optimizer in ("adamw", "adamw_fused"):
            device += 2 * allocation_bytes(numel * param_bytes) * g.count
        elif optimizer == "paged_adamw":
            is_paged = numel >= MIN_PAGED_SIZE
            device += where(is_paged, 0, 2 * allocation_bytes(numel * 4)) * g.count
            paged += where(is_paged, 2 * numel * 4, 0) * g.count
        elif optimizer in ("adamw_8bit", "paged_adamw_8bit"):
            tensor_device, tensor_paged = _adam_8bit_tensor(numel, optimizer == "paged_adamw_8bit")
            device += tensor_device * g.count
            paged += tensor_paged * g.count
        elif optimizer == "sgd":
            pass
        elif optimizer == "sgd_momentum":
            device += allocation_bytes(numel * param_bytes) * g.count
        elif optimizer == "adafactor":
            moment = allocation_bytes(g.rows * 4) + allocation_bytes(g.cols * 4) if g.is_matrix \
                else allocation_bytes(numel * 4)
            device += (moment + allocation_bytes(4)) * g.count
        else:
            raise ValueError(f"unknown optimizer {optimizer}")
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        device += 2 * allocation_bytes(DYNAMIC_MAP_BYTES)
    return device, paged


def optimizer_step_temp_bytes(optimizer: str, groups, param_bytes: int):
    """Temporaries alive during `optimizer.step()` on top of state and gradients.

    adamw (foreach, torch's default on CUDA): `torch._foreach_sqrt(exp_avg_sqs)` makes one
    full copy of the second moment, 1 x P over all tensors (torch/optim/adamw.py,
    `_multi_tensor_adamw`). Fused and bitsandbytes kernels update in place: 0.
    adafactor loops per tensor (transformers 5.24 `Adafactor.step`): two fp32 copies of the
    tensor (`grad**2` beside `+ eps`, the old update beside `_approx_sq_grad`'s product, the
    update beside `-update`), plus `grad.float()` and `p.float()` when it is not fp32: 4
    copies; plus, at `grad**2 + eps`, the previous tensor's update, which the loop variable
    keeps alive (counted for consecutive per-layer groups), or, at `_approx_sq_grad`, the
    row and column factors, whichever is larger (checked against the trace simulator in
    tests/simulate/test_adafactor_step.py).
    sgd with momentum clones the gradient into the buffer on the first step only.
    """
    if optimizer == "adamw":
        return sum(allocation_bytes(g.rows * g.cols * param_bytes) * g.count for g in groups)
    if optimizer == "adafactor":
        copies = 2 if param_bytes == 4 else 4
        peak = previous = 0
        for g in groups:
            factors = allocation_bytes(g.rows * 4) + allocation_bytes(g.cols * 4) if g.is_matrix else 0
            carried = previous if g.count > 1 else 0  # a count-1 tensor (embeddings, lm_head) has no such neighbour
            peak = maximum(peak, copies * allocation_bytes(g.rows * g.cols * 4) + maximum(factors, carried))
            previous = allocation_bytes(g.rows * g.cols * 4) if g.count > 1 else 0
        return peak
    return 0


def optimizer_state_terms(optimizer: str, groups, param_bytes: int) -> list:
    """Device-side state as terms: per tensor group for the formulas that are one product (AdamW's two
    moments, SGD's momentum), one term holding `optimizer_state_bytes` for the per-tensor rules of
    8-bit, paged and Adafactor state (thresholds, factored moments)."""
    copies = {"adamw": 2, "adamw_fused": 2, "sgd_momentum": 1}.get(optimizer)
    source = "torch/optim (adamw.py, sgd.py)"
    if copies:
        return [term(g.name, f"{copies} state tensors per parameter x elements x P",
                     (("tensors", copies * g.count), ("elements", g.rows * g.cols), ("P", param_bytes)), source,
                     rounding=ALLOCATION) for g in groups]
    if optimizer == "sgd" or not groups:
        return []
    device, _paged = optimizer_state_bytes(optimizer, groups, param_bytes)
    return [term(f"{optimizer} state", "per-tensor rule (optimizer.optimizer_state_bytes)", (("B", device),),
                 "bitsandbytes/optim/optimizer.py, transformers Adafactor")]


def optimizer_step_temp_terms(optimizer: str, groups, param_bytes: int) -> list:
    """`optimizer_step_temp_bytes` as terms: foreach AdamW's sqrt copy per tensor group, else one term."""
    if optimizer == "adamw":
        return [term(g.name, "sqrt(exp_avg_sq) copy: tensors x elements x P",
                     (("tensors", g.count), ("elements", g.rows * g.cols), ("P", param_bytes)),
                     "torch/optim/adamw.py (_multi_tensor_adamw)", rounding=ALLOCATION) for g in groups]
    nbytes = optimizer_step_temp_bytes(optimizer, groups, param_bytes)
    if isinstance(nbytes, int) and nbytes == 0:
        return []
    return [term(f"{optimizer} step temporaries", "optimizer.optimizer_step_temp_bytes", (("B", nbytes),),
                 "transformers Adafactor.step")]
