"""Exact bytes held by quantized tensors, named as the planner names them
(`vramplan.memory.weights.nf4_state_tensor_bytes`): packed, absmax, quant_map and, with double
quantization, nested_absmax, nested_quant_map, offset. Bytes = numel * element_size per tensor
(allocator rounding is the planner's business, not counted here).
"""
from __future__ import annotations

import torch
from torch import nn

from vramplan.torch_nf4.linear import NF4Linear
from vramplan.torch_nf4.state import QuantState


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def state_tensor_bytes(packed: torch.Tensor, state: QuantState) -> dict[str, int]:
    """{name: bytes} for one quantized weight given its packed codes and QuantState."""
    return {"packed": tensor_bytes(packed)} | {name: tensor_bytes(t) for name, t in state.tensors().items()}


def module_tensor_bytes(module: NF4Linear) -> dict[str, int]:
    """{name: bytes} for one NF4Linear's quantized weight (bias and LoRA adapters excluded)."""
    return state_tensor_bytes(module.weight, module.quant_state)


def model_tensor_bytes(model: nn.Module) -> dict[str, dict[str, int]]:
    """{module name: {tensor name: bytes}} for every NF4Linear in `model`."""
    return {name: module_tensor_bytes(m) for name, m in model.named_modules() if isinstance(m, NF4Linear)}


def total_quantized_bytes(model: nn.Module) -> int:
    """Sum of every quantized tensor's bytes in `model` (packed weights plus their constants)."""
    return sum(sum(sizes.values()) for sizes in model_tensor_bytes(model).values())
