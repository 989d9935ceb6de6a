"""Optimizer state and the temporaries of one optimizer step, from the optimizer's registry entry.

Per tensor, because bitsandbytes decides per tensor: 8-bit state only for tensors of at
least the entry's `min_8bit_size` (4096) elements, paged (CUDA managed) buffers only for
tensors of at least `min_paged_size` (1e5) elements (bitsandbytes/optim/optimizer.py,
`get_state_buffer`, `init_state`). Paged state is invisible to `torch.cuda.max_memory_allocated`;
it is returned separately. What each optimizer keeps is data in `vramplan.optimizers`.
"""
from __future__ import annotations

from vramplan.memory.terms import ALLOCATION, term, total
from vramplan.memory.xp import allocation_bytes, ceil_div, maximum, where
from vramplan.optimizers import (
    BNB_8BIT_BLOCKSIZE, BNB_DYNAMIC_MAP_BYTES, BNB_MIN_8BIT_SIZE, BNB_MIN_PAGED_SIZE, get_optimizer,
)

MIN_8BIT_SIZE = BNB_MIN_8BIT_SIZE
MIN_PAGED_SIZE = BNB_MIN_PAGED_SIZE


def _8bit_tensor(entry, numel):
    """(device bytes, paged bytes) of one tensor's 8-bit state: k x uint8 + k x fp32 absmax per block
    (k = state_tensors), or k x fp32 under `min_8bit_size`."""
    tensors = entry.state_tensors
    absmax = tensors * allocation_bytes(ceil_div(numel, BNB_8BIT_BLOCKSIZE) * 4)
    codes = tensors * numel
    is_8bit = numel >= entry.min_8bit_size
    is_paged = (numel >= entry.min_paged_size) & entry.paged
    fp32_state = tensors * allocation_bytes(numel * 4)
    device = where(is_8bit, absmax + where(is_paged, 0, tensors * allocation_bytes(numel)), fp32_state)
    paged_bytes = where(is_8bit & is_paged, codes, 0)
    return device, paged_bytes


def _factored_tensor(group):
    """Adafactor's fp32 second moment of one tensor: row + column factors of a matrix, full for a
    vector, plus its 0-dim `state["RMS"]`."""
    moment = allocation_bytes(group.rows * 4) + allocation_bytes(group.cols * 4) if group.is_matrix \
        else allocation_bytes(group.rows * group.cols * 4)
    return moment + allocation_bytes(4)


def optimizer_state_bytes(optimizer: str, groups, param_bytes: int):
    """(device bytes, paged bytes) of optimizer state for trainable tensor groups.

    Plain state: state_tensors x n x B, B the entry's state bytes or the parameter's P (adamw:
    exp_avg + exp_avg_sq = 2 x P, torch/optim/adamw.py; the step counter is a CPU scalar;
    sgd_momentum 1 x P; 32-bit bitsandbytes state is always fp32: 2 x 4 B, paged from 1e5 elements).
    8-bit: 2 x 1 B + 2 x 4 B per 256 (the NOTES' 2.03125 B/param) plus the two quantization maps.
    adafactor (transformers.optimization.Adafactor, beta1=None): factored row+col second
    moment for matrices, full second moment for vectors, always fp32 (`.to(grad)` after
    `grad.float()`), plus the 0-dim `state["RMS"]` tensor of each parameter.
    """
    entry = get_optimizer(optimizer)
    element_bytes = param_bytes if entry.state_bytes is None else entry.state_bytes
    device = paged = 0
    for g in groups:
        numel = g.rows * g.cols
        if entry.factored:
            device += _factored_tensor(g) * g.count
        elif entry.eight_bit:
            tensor_device, tensor_paged = _8bit_tensor(entry, numel)
            device += tensor_device * g.count
            paged += tensor_paged * g.count
        elif entry.paged:
            is_paged = numel >= entry.min_paged_size
            device += where(is_paged, 0, entry.state_tensors * allocation_bytes(numel * element_bytes)) * g.count
            paged += where(is_paged, entry.state_tensors * numel * element_bytes, 0) * g.count
        elif entry.state_tensors:
            device += entry.state_tensors * allocation_bytes(numel * element_bytes) * g.count
    if entry.eight_bit:
        device += 2 * allocation_bytes(BNB_DYNAMIC_MAP_BYTES)
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
    step_temp = get_optimizer(optimizer).step_temp
    if step_temp == "foreach_sqrt_copy":
        return sum(allocation_bytes(g.rows * g.cols * param_bytes) * g.count for g in groups)
    if step_temp == "adafactor_loop":
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
    """Device-side state as terms, per tensor group: the plain moments (AdamW's two, SGD's one), and for
    8-bit, paged and Adafactor state the branch of the per-tensor rule each group takes (8-bit codes
    and absmax or 32-bit state under `min_8bit_size`, managed memory from `min_paged_size`, row and
    column factors). On sweep arrays, where the branch differs per point, one term holds
    `optimizer_state_bytes`."""
    entry = get_optimizer(optimizer)
    if not groups:
        return []
    if entry.factored or entry.eight_bit or entry.paged:
        if any(not isinstance(g.rows * g.cols, int) for g in groups):
            device, _paged = optimizer_state_bytes(optimizer, groups, param_bytes)
            return [term(f"{optimizer} state", "per-tensor rule (optimizer.optimizer_state_bytes)", (("B", device),),
                         entry.source)]
        terms = [item for g in groups for item in _rule_terms(entry, g, param_bytes)]
        if entry.eight_bit:
            terms.append(term("quantization maps (signed + unsigned)", "2 maps x 256 x fp32",
                              (("maps", 2), ("B", BNB_DYNAMIC_MAP_BYTES)), entry.source, rounding=ALLOCATION))
        return terms
    copies, element_bytes = entry.state_tensors, param_bytes if entry.state_bytes is None else entry.state_bytes
    if not copies:
        return []
    unit = "P" if entry.state_bytes is None else "B"
    return [term(g.name, f"{copies} state tensors per parameter x elements x {unit}",
                 (("tensors", copies * g.count), ("elements", g.rows * g.cols), (unit, element_bytes)), entry.source,
                 rounding=ALLOCATION) for g in groups]


def _rule_terms(entry, g, param_bytes: int) -> list:
    """The device terms of one tensor group under an 8-bit, paged or factored entry (scalar sizes)."""
    numel, tensors = g.rows * g.cols, entry.state_tensors * g.count
    if entry.factored:
        rms = term(f"{g.name} RMS", "tensors x 1 x fp32", (("tensors", g.count), ("elements", 1), ("B", 4)),
                   entry.source, rounding=ALLOCATION)
        if not g.is_matrix:
            return [term(f"{g.name} second moment (vector)", "tensors x elements x fp32",
                         (("tensors", g.count), ("elements", numel), ("B", 4)), entry.source, rounding=ALLOCATION), rms]
        return [term(f"{g.name} row factor", "tensors x rows x fp32", (("tensors", g.count), ("rows", g.rows), ("B", 4)),
                     entry.source, rounding=ALLOCATION),
                term(f"{g.name} column factor", "tensors x cols x fp32",
                     (("tensors", g.count), ("cols", g.cols), ("B", 4)), entry.source, rounding=ALLOCATION), rms]
    paged = entry.paged and numel >= entry.min_paged_size
    if entry.eight_bit and numel >= entry.min_8bit_size:
        absmax = term(f"{g.name} absmax", f"state tensors x blocks of {BNB_8BIT_BLOCKSIZE} x fp32",
                      (("tensors", tensors), ("blocks", -(-numel // BNB_8BIT_BLOCKSIZE)), ("B", 4)), entry.source,
                      rounding=ALLOCATION)
        if paged:
            return [absmax]  # the uint8 codes live in managed memory (paged_optimizer_bytes)
        return [term(f"{g.name} 8-bit state", "state tensors x elements x 1 B",
                     (("tensors", tensors), ("elements", numel), ("B", 1)), entry.source, rounding=ALLOCATION), absmax]
    if paged:
        return []  # managed memory, outside max_memory_allocated
    element_bytes = 4 if entry.eight_bit else (param_bytes if entry.state_bytes is None else entry.state_bytes)
    why = f" (< {entry.min_8bit_size} elements: 32-bit)" if entry.eight_bit else ""
    return [term(f"{g.name} state{why}", "state tensors x elements x B",
                 (("tensors", tensors), ("elements", numel), ("B", element_bytes)), entry.source, rounding=ALLOCATION)]


def optimizer_step_temp_terms(optimizer: str, groups, param_bytes: int) -> list:
    """`optimizer_step_temp_bytes` as terms: foreach AdamW's sqrt copy per tensor group, else one term."""
    entry = get_optimizer(optimizer)
    if entry.step_temp == "foreach_sqrt_copy":
        return [term(g.name, "sqrt(exp_avg_sq) copy: tensors x elements x P",
                     (("tensors", g.count), ("elements", g.rows * g.cols), ("P", param_bytes)),
                     "torch/optim/adamw.py (_multi_tensor_adamw)", rounding=ALLOCATION) for g in groups]
    if entry.step_temp == "adafactor_loop" and groups and all(isinstance(g.rows * g.cols, int) for g in groups):
        return _adafactor_step_terms(entry, groups, param_bytes)
    nbytes = optimizer_step_temp_bytes(optimizer, groups, param_bytes)
    if isinstance(nbytes, int) and nbytes == 0:
        return []
    return [term(f"{optimizer} step temporaries", "optimizer.optimizer_step_temp_bytes", (("B", nbytes),),
                 entry.source)]


def _adafactor_step_terms(entry, groups, param_bytes: int) -> list:
    """The tensor whose update is the step's largest moment (`optimizer_step_temp_bytes`), written out:
    its fp32 copies plus its row and column factors or the previous tensor's update, whichever is larger."""
    copies = 2 if param_bytes == 4 else 4
    best, best_bytes, previous = [], -1, None
    for g in groups:
        numel = g.rows * g.cols
        parts = [term(f"{g.name}: fp32 copies in its update", "copies x elements x fp32",
                      (("copies", copies), ("elements", numel), ("B", 4)), entry.source, rounding=ALLOCATION)]
        factors = [term(f"{g.name} row factor", "1 x rows x fp32", (("tensors", 1), ("rows", g.rows), ("B", 4)),
                        entry.source, rounding=ALLOCATION),
                   term(f"{g.name} column factor", "1 x cols x fp32", (("tensors", 1), ("cols", g.cols), ("B", 4)),
                        entry.source, rounding=ALLOCATION)] if g.is_matrix else []
        carried = [term(f"{previous.name}: previous update, kept by the loop variable", "1 x elements x fp32",
                        (("tensors", 1), ("elements", previous.rows * previous.cols), ("B", 4)), entry.source,
                        rounding=ALLOCATION)] if previous is not None and g.count > 1 else []
        parts += factors if total(factors) >= total(carried) else carried
        if total(parts) > best_bytes:
            best, best_bytes = parts, total(parts)
        previous = g if g.count > 1 else None
    return best
