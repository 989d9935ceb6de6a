"""Triton kernel: packed NF4/FP4 (+ nested absmax decoded in the same launch) -> fp32/fp16/bf16.

Each program reads BLOCK packed bytes and writes 2*BLOCK contiguous outputs (high nibble
first). Bit-exact with bitsandbytes: every multiply and add rounds to fp32 on its own (the
launch turns off FMA contraction), and bf16 is rounded to nearest-even by hand because the
interpreter's fp32->bf16 cast truncates. TRITON_INTERPRET=1 must be set before this module is
imported for the kernel to run on CPU tensors.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from vramplan.torch_nf4.state import QuantState

_OUT_KIND = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
BYTES_PER_PROGRAM = 1024


@triton.jit
def _dequant_4bit_kernel(
    packed_ptr,
    absmax_ptr,
    code_ptr,
    nested_absmax_ptr,
    nested_code_ptr,
    offset_ptr,
    out_ptr,
    n_elements,
    BLOCKSIZE: tl.constexpr,
    NESTED_BLOCKSIZE: tl.constexpr,
    NESTED: tl.constexpr,
    OUT_KIND: tl.constexpr,  # 0 fp32, 1 fp16, 2 bf16 (out_ptr is int16 storage)
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    byte_offs = pid * BLOCK + tl.arange(0, BLOCK)
    byte = tl.load(packed_ptr + byte_offs, mask=byte_offs < (n_elements + 1) // 2, other=0)
    nibbles = tl.interleave(byte >> 4, byte & 0xF).to(tl.int32)
    offs = pid * (2 * BLOCK) + tl.arange(0, 2 * BLOCK)
    mask = offs < n_elements

    block = offs // BLOCKSIZE
    if NESTED:
        q8 = tl.load(absmax_ptr + block, mask=mask, other=0).to(tl.int32)
        scale2 = tl.load(nested_absmax_ptr + block // NESTED_BLOCKSIZE, mask=mask, other=0.0)
        absmax = tl.load(nested_code_ptr + q8) * scale2
        absmax = absmax + tl.load(offset_ptr)
    else:
        absmax = tl.load(absmax_ptr + block, mask=mask, other=0.0)
    value = tl.load(code_ptr + nibbles) * absmax

    if OUT_KIND == 0:
        tl.store(out_ptr + offs, value, mask=mask)
    elif OUT_KIND == 1:
        tl.store(out_ptr + offs, value.to(tl.float16), mask=mask)
    else:
        bits = value.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        tl.store(out_ptr + offs, (bits >> 16).to(tl.int32).to(tl.int16), mask=mask)


def dequantize_4bit_triton(packed: torch.Tensor, state: QuantState, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantize packed codes with one kernel launch; same bits as bitsandbytes' dequantize_4bit."""
    dtype = dtype or state.dtype
    if dtype not in _OUT_KIND:
        raise ValueError(f"dequantize to float32/float16/bfloat16, got {dtype}")
    n = state.numel
    out = torch.empty(state.shape, dtype=dtype, device=packed.device)
    if n == 0:
        return out
    packed = packed.reshape(-1).view(torch.uint8).contiguous()
    absmax = state.absmax.contiguous()
    if state.nested:
        nested = (state.nested_absmax.contiguous(), state.nested_code.contiguous(), state.offset.reshape(1).float())
    else:
        nested = (absmax, absmax, absmax)  # unused placeholders; the NESTED branch is compiled out
    grid = (triton.cdiv((n + 1) // 2, BYTES_PER_PROGRAM),)
    _dequant_4bit_kernel[grid](
        packed,
        absmax,
        state.code.contiguous(),
        *nested,
        out.view(torch.int16) if dtype == torch.bfloat16 else out,
        n,
        BLOCKSIZE=state.blocksize,
        NESTED_BLOCKSIZE=state.nested_blocksize,
        NESTED=state.nested,
        OUT_KIND=_OUT_KIND[dtype],
        BLOCK=BYTES_PER_PROGRAM,
        enable_fp_fusion=False,
    )
    return out
