"""Code tables of bitsandbytes' 4-bit types and of its signed dynamic 8-bit map.

Values and construction follow bitsandbytes 0.50 `functional.get_4bit_type` and
`functional.create_dynamic_map` so that every table is bit-identical (fp32).
"""
from __future__ import annotations

import functools

import torch

# NF4: quantiles of N(0, 1) (QLoRA, arXiv:2305.14314), as hard-coded by bitsandbytes.
_NF4_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)  # fmt: skip
# FP4 (1 sign, 2 exponent, 1 mantissa bit, bias 2) in bit-pattern order, divided by 12 below.
_FP4_VALUES = (0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0)

QUANT_TYPES = ("nf4", "fp4")
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
NESTED_BLOCKSIZE = 256  # bitsandbytes double-quantizes absmax in blocks of 256, always
LUT_SIZE = 65536  # bins of bitsandbytes' CPU 8-bit quantizer lookup table


def check_quant_type(quant_type: str) -> None:
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")


@functools.cache
def _fourbit_code_cpu(quant_type: str) -> torch.Tensor:
    check_quant_type(quant_type)
    data = torch.tensor(_NF4_VALUES if quant_type == "nf4" else _FP4_VALUES, dtype=torch.float32)
    return data / data.abs().max()


def fourbit_code(quant_type: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16-entry fp32 code table (`quant_map`), indexed by the 4-bit code."""
    return _fourbit_code_cpu(quant_type).to(device, copy=True)


@functools.cache
def fourbit_bounds(quant_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 midpoints of the sorted table, sort order) on CPU; bucketize on them = nearest code.

    The order is computed once on CPU so that FP4's +0/-0 tie resolves the same on every device.
    """
    code = _fourbit_code_cpu(quant_type)
    order = torch.argsort(code)
    return (code[order[:-1]] + code[order[1:]]) / 2, order


@functools.cache
def _dynamic_map_cpu() -> torch.Tensor:
    # Signed dynamic map, 7 exponent bits (Dettmers 2015, arXiv:1511.04561): for exponent i the
    # midpoints of 2**i + 1 linspace(0.1, 1) boundaries, scaled by 10**(i - 6), both signs; plus 0 and 1.
    data: list[float] = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


def dynamic_map(device: torch.device | str = "cpu") -> torch.Tensor:
    """bitsandbytes' signed dynamic 8-bit map (256 sorted fp32 entries): `nested_quant_map`."""
    return _dynamic_map_cpu().to(device, copy=True)


@functools.cache
def _dynamic_map_lut_cpu() -> torch.Tensor:
    # bitsandbytes' CPU 8-bit quantizer (csrc/cpu_ops.cpp, build_quantize_lut): bin i of 65536
    # stands for -1 + 2i/65535 and holds the index of the first code whose upper midpoint is
    # not below it (strict `<`, fp32 arithmetic throughout).
    code = _dynamic_map_cpu()
    midpoints = 0.5 * (code[:-1] + code[1:])
    bin_values = -1.0 + (2.0 * torch.arange(LUT_SIZE, dtype=torch.float32)) / float(LUT_SIZE - 1)
    return torch.searchsorted(midpoints, bin_values, right=False).to(torch.uint8)


def dynamic_map_lut(device: torch.device | str = "cpu") -> torch.Tensor:
    return _dynamic_map_lut_cpu().to(device)
