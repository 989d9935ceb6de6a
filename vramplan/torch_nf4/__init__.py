"""Bundled NF4/FP4: bitsandbytes-compatible 4-bit storage, a Triton dequant kernel and a
QLoRA linear layer. Torch side only: the planner core never imports this package.

One format concern per module: `codes` (lookup tables), `state` (QuantState layout and
checkpoint keys), `quantize`, `dequantize` (torch reference + dispatch),
`dequantize_triton` (the kernel), `linear` (NF4 + LoRA layer), `inject` (swap a Hugging Face
model's linears), `accounting` (bytes each quantized tensor holds).
"""
from vramplan.torch_nf4.dequantize import dequantize_4bit, dequantize_4bit_torch
from vramplan.torch_nf4.quantize import quantize_4bit
from vramplan.torch_nf4.state import QuantState

__all__ = ["QuantState", "dequantize_4bit", "dequantize_4bit_torch", "quantize_4bit"]
