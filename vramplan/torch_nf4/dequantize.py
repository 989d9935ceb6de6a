"""4-bit dequantization: a pure-torch reference (the test oracle, and the CPU path when Triton
is absent) and `dequantize_4bit`, which picks the Triton kernel where it can run.

Arithmetic is bitsandbytes' (csrc/cpu_ops.cpp, kernels.cu): with double quantization
absmax = fp32(code8[q] * nested_absmax[block // 256]) + offset, rounded after each step;
then out = fp32(code4[nibble] * absmax), rounded once (round-to-nearest-even) to the out dtype.
"""
from __future__ import annotations

import os

import torch

from vramplan.torch_nf4.quantize import FLOAT_DTYPES
from vramplan.torch_nf4.state import QuantState


def _expand_blocks(per_block: torch.Tensor, blocksize: int, n: int) -> torch.Tensor:
    return per_block.repeat_interleave(blocksize)[:n]


def decode_absmax(state: QuantState) -> torch.Tensor:
    """fp32 absmax per block (undoing double quantization when the state is nested)."""
    if not state.nested:
        return state.absmax.float()
    scale = state.nested_code[state.absmax.long()] * _expand_blocks(
        state.nested_absmax, state.nested_blocksize, state.absmax.numel()
    )
    return scale + state.offset


def dequantize_4bit_torch(packed: torch.Tensor, state: QuantState, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Reference dequant of packed 4-bit codes to `dtype` (default: the original weight dtype)."""
    n = state.numel
    flat = packed.reshape(-1).view(torch.uint8)
    nibbles = torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)[:n]
    values = state.code[nibbles.long()] * _expand_blocks(decode_absmax(state), state.blocksize, n)
    return values.to(dtype or state.dtype).reshape(state.shape)


def triton_usable(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def dequantize_4bit(
    packed: torch.Tensor, state: QuantState, dtype: torch.dtype | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Dequantize with the Triton kernel ("triton"), the torch reference ("torch"), or whichever
    can run here ("auto": Triton on CUDA or under TRITON_INTERPRET=1, else torch). float64
    (exact from the fp32 products; for gradcheck) always takes the torch path."""
    dtype = dtype or state.dtype
    if dtype not in (*FLOAT_DTYPES, torch.float64):
        raise ValueError(f"dequantize to float32/float16/bfloat16 (float64: torch backend only), got {dtype}")
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    use_torch = dtype == torch.float64 or not triton_usable(packed.device)
    if backend == "torch" or (backend == "auto" and use_torch):
        return dequantize_4bit_torch(packed, state, dtype)
    from vramplan.torch_nf4.dequantize_triton import dequantize_4bit_triton

    return dequantize_4bit_triton(packed, state, dtype)
