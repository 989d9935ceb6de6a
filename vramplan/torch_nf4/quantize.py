"""Blockwise 4-bit quantization (NF4/FP4), byte-for-byte what bitsandbytes 0.50 produces.

First level (bitsandbytes `quantize_4bit`, backends/default/ops.py — the rule its CUDA kernel
follows): per block of `blocksize` elements absmax = max|x|; full blocks are scaled by the fp32
reciprocal `x * (1 / max(absmax, 1e-38))`, the ragged last block by true division
`x / max(absmax, 1e-38)` (and stores the clamped absmax); values are clamped to [-1, 1] and
bucketized on the fp32 midpoints of the sorted code table. Two codes per byte, the first
element in the high nibble; packed shape [ceil(n/2), 1].

Double quantization (bitsandbytes `quantize_4bit(compress_statistics=True)`): offset =
absmax.mean(); (absmax - offset) is quantized blockwise (256) to uint8 with the signed dynamic
map by bitsandbytes' CPU rule (csrc/cpu_ops.cpp): scaled by the fp32 reciprocal of the block's
absmax, mapped to one of 65536 bins by ((v + 1) * 0.5) * 65535 + 0.5 truncated, and the bin's
precomputed nearest code. A block whose absmax is 0 stores code 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vramplan.torch_nf4 import codes
from vramplan.torch_nf4.state import QuantState

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _blockwise_absmax(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(absmax per block, x scaled to [-1, 1]) exactly as bitsandbytes' 4-bit quantizer computes them."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if full < n:
        tail_absmax = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, tail_absmax.view(1)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / tail_absmax, -1, 1)])
    return absmax, scaled


def _quantize_dynamic_8bit(values: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 codes, fp32 absmax per block) of fp32 `values`, bitsandbytes' CPU 8-bit rule."""
    n = values.numel()
    blocks = -(-n // blocksize)
    padded = F.pad(values, (0, blocks * blocksize - n)).view(blocks, blocksize)
    absmax = padded.abs().amax(dim=1)
    inverse = torch.where(absmax == 0, torch.zeros_like(absmax), 1.0 / absmax)
    normed = torch.clamp(padded * inverse.view(-1, 1), -1.0, 1.0)
    bins = (((normed + 1.0) * 0.5) * float(codes.LUT_SIZE - 1) + 0.5).to(torch.int64)
    q = codes.dynamic_map_lut(values.device)[bins]
    q = torch.where((absmax == 0).view(-1, 1), torch.zeros_like(q), q)
    return q.reshape(-1)[:n], absmax


def quantize_4bit(
    weight: torch.Tensor, blocksize: int = 64, quant_type: str = "nf4", double_quant: bool = False
) -> tuple[torch.Tensor, QuantState]:
    """Quantize `weight` to packed 4-bit codes ([ceil(n/2), 1] uint8) and its QuantState.

    Same bytes as `bitsandbytes.functional.quantize_4bit(weight, blocksize=blocksize,
    compress_statistics=double_quant, quant_type=quant_type)`. Any device; pure torch.
    """
    codes.check_quant_type(quant_type)
    if blocksize not in codes.BLOCKSIZES:
        raise ValueError(f"blocksize must be one of {codes.BLOCKSIZES}, got {blocksize}")
    if weight.dtype not in FLOAT_DTYPES:
        raise ValueError(f"4-bit quantization takes float32/float16/bfloat16 weights, got {weight.dtype}")
    if weight.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    if not bool(torch.isfinite(weight).all()):
        bad = int((~torch.isfinite(weight)).sum())
        raise ValueError(
            f"cannot quantize a tensor with {bad} inf/NaN value(s) (shape {tuple(weight.shape)}): "
            "a non-finite absmax would corrupt its whole block; fix the weights first"
        )
    device = weight.device
    flat = weight.detach().reshape(-1).float()
    absmax, scaled = _blockwise_absmax(flat, blocksize)
    if scaled.numel() % 2:
        scaled = F.pad(scaled, (0, 1))
    bounds, order = codes.fourbit_bounds(quant_type)
    q = torch.bucketize(scaled, bounds.to(device), out_int32=True)
    if quant_type != "nf4":
        q = order.to(device)[q]
    q = q.to(torch.uint8)
    packed = ((q[::2] << 4) | q[1::2]).unsqueeze(1)

    state = QuantState(
        absmax=absmax,
        shape=weight.shape,
        dtype=weight.dtype,
        blocksize=blocksize,
        quant_type=quant_type,
        code=codes.fourbit_code(quant_type, device),
    )
    if double_quant:
        offset = absmax.mean()
        if not bool(torch.isfinite(offset)):
            raise ValueError(
                "double quantization offset (mean absmax) overflows float32 for weights this large; "
                "quantize with double_quant=False"
            )
        state.absmax, state.nested_absmax = _quantize_dynamic_8bit(absmax - offset, codes.NESTED_BLOCKSIZE)
        state.offset = offset
        state.nested_code = codes.dynamic_map(device)
    return packed, state
