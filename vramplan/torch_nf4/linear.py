"""A frozen NF4/FP4 linear layer with an optional LoRA branch (QLoRA, arXiv:2305.14314).

Base path = bitsandbytes `Linear4bit.forward` + `MatMul4Bit`: x is cast to the compute dtype,
W is dequantized to it, `F.linear`, and the output is cast back to the input dtype. The
autograd Function saves only the packed weight (already a buffer, so no new memory): no input,
no dequantized copy; backward dequantizes W again. LoRA path = peft `lora.Linear4bit`: the base
output is cloned, then dropout -> lora_A -> lora_B, times alpha / rank, in the adapters' dtype,
cast to the base output's dtype and added.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vramplan.torch_nf4.dequantize import dequantize_4bit
from vramplan.torch_nf4.quantize import quantize_4bit
from vramplan.torch_nf4.state import QuantState


_STATE_BUFFERS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "offset")


# Which path computes x @ dequant(W).T and its input gradient:
#   "dequant": dequantize W to the compute dtype (one Triton launch), then F.linear / matmul.
#   "fused":   vramplan.torch_nf4.matmul_triton, W tiles dequantized in registers and fed to
#              tl.dot, forward and grad_x; where it does not apply (fp32/fp64 compute, blocksize
#              > 256, in_features not a multiple of the blocksize, no Triton) it falls back to "dequant".
# The default stays "dequant" until a GPU run of `benchmarks/nf4_dequant.py --section matmul`
# shows the fused path faster: no GPU measurement of it exists yet.
MATMUL_BACKENDS = ("dequant", "fused")
MATMUL_BACKEND = "dequant"


def _fused_applies(dtype: torch.dtype, state: QuantState, device: torch.device) -> bool:
    try:
        from vramplan.torch_nf4.matmul_triton import fused_supported
    except ImportError:  # no triton
        return False
    return fused_supported(dtype, state, device)


class _MatMul4bit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, packed, state: QuantState, bias, fused: bool):
        ctx.state = state
        ctx.fused = fused
        ctx.save_for_backward(packed)
        if fused and _fused_applies(x.dtype, state, x.device):
            from vramplan.torch_nf4.matmul_triton import linear_4bit_triton

            return linear_4bit_triton(x, packed, state, bias)
        return F.linear(x, dequantize_4bit(packed, state, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_output):
        (packed,) = ctx.saved_tensors
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            if ctx.fused and _fused_applies(grad_output.dtype, ctx.state, grad_output.device):
                from vramplan.torch_nf4.matmul_triton import matmul_4bit_triton

                grad_x = matmul_4bit_triton(grad_output, packed, ctx.state)
            else:
                grad_x = grad_output @ dequantize_4bit(packed, ctx.state, grad_output.dtype)
        if ctx.needs_input_grad[3]:
            grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(0)
        return grad_x, None, None, grad_bias, None


def matmul_4bit(
    x: torch.Tensor,
    packed: torch.Tensor,
    state: QuantState,
    bias: torch.Tensor | None = None,
    backend: str | None = None,
):
    """x @ dequant(W).T + bias, saving only the packed weight for backward. `backend`:
    "dequant" or "fused" (see MATMUL_BACKEND, the default when None)."""
    backend = MATMUL_BACKEND if backend is None else backend
    if backend not in MATMUL_BACKENDS:
        raise ValueError(f"backend must be one of {MATMUL_BACKENDS}, got {backend!r}")
    return _MatMul4bit.apply(x, packed, state, bias, backend == "fused")


class NF4Linear(nn.Module):
    """Frozen 4-bit weight (packed + QuantState buffers) with an optional LoRA adapter.

    The state dict uses bitsandbytes' keys (`weight` packed uint8, `weight.absmax`,
    `weight.quant_map`, `weight.nested_absmax`, `weight.nested_quant_map`,
    `weight.quant_state.bitsandbytes__nf4`), so bnb-4bit checkpoints load and ours load in bnb.
    """

    def __init__(
        self,
        packed: torch.Tensor,
        state: QuantState,
        bias: torch.Tensor | None = None,
        *,
        compute_dtype: torch.dtype = torch.bfloat16,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if len(state.shape) != 2:
            raise ValueError(f"a linear weight is 2-D, got shape {tuple(state.shape)}")
        self.out_features, self.in_features = state.shape
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(packed, requires_grad=False)  # uint8, like bnb's Params4bit
        self._set_state(state)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        self.lora_rank = lora_rank
        if lora_rank > 0:
            device = packed.device
            self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
            self.lora_A = nn.Linear(self.in_features, lora_rank, bias=False, device=device, dtype=lora_dtype)
            self.lora_B = nn.Linear(lora_rank, self.out_features, bias=False, device=device, dtype=lora_dtype)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # peft's default init
            nn.init.zeros_(self.lora_B.weight)
            self.lora_scaling = lora_alpha / lora_rank

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        blocksize: int = 64,
        double_quant: bool = True,
        quant_type: str = "nf4",
        **kwargs,
    ) -> NF4Linear:
        """Quantize `linear.weight` (on its device) and wrap it; `kwargs` go to `__init__`."""
        packed, state = quantize_4bit(linear.weight.detach(), blocksize, quant_type, double_quant)
        return cls(packed, state, linear.bias, **kwargs)

    def _set_state(self, state: QuantState) -> None:
        # Tensors live in non-persistent buffers (they follow `.to(device)`); the rest is metadata.
        # Keeping no tensor in the metadata means a device move leaves no copy behind.
        for name in _STATE_BUFFERS:
            self._buffers.pop(name, None)
        for name, tensor in state.tensors().items():
            self.register_buffer(name, tensor, persistent=False)
        self._state_meta = {
            "shape": state.shape,
            "dtype": state.dtype,
            "blocksize": state.blocksize,
            "quant_type": state.quant_type,
            "nested_blocksize": state.nested_blocksize,
            "nested_dtype": state.nested_dtype,
        }

    @property
    def quant_state(self) -> QuantState:
        """The QuantState over this module's current buffers."""
        return QuantState(
            absmax=self.absmax,
            code=self.quant_map,
            offset=self._buffers.get("offset"),
            nested_absmax=self._buffers.get("nested_absmax"),
            nested_code=self._buffers.get("nested_quant_map"),
            **self._state_meta,
        )

    def _apply(self, fn, recurse=True):
        # `model.to(torch.bfloat16)` must not cast the fp32 quantization constants: move them
        # to wherever the packed weight went, keep their dtype.
        state = {name: self._buffers.pop(name) for name in _STATE_BUFFERS if name in self._buffers}
        super()._apply(fn, recurse)
        for name, tensor in state.items():
            self._buffers[name] = tensor.to(self.weight.device)
        return self

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_4bit(self.weight, self.quant_state, dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        result = matmul_4bit(x.to(self.compute_dtype), self.weight, self.quant_state, bias).to(input_dtype)
        if self.lora_rank == 0:
            return result
        result = result.clone()  # peft clones the 4-bit base output before adding the adapter
        lora_x = x.to(self.lora_A.weight.dtype)
        update = self.lora_B(self.lora_A(self.lora_dropout(lora_x))) * self.lora_scaling
        return result + update.to(result.dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # weight (packed), bias
        for key, tensor in self.quant_state.as_dict().items():
            destination[f"{prefix}weight.{key}"] = tensor if keep_vars else tensor.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        state_prefix = prefix + "weight."
        state_keys = [k for k in state_dict if k.startswith(state_prefix)]
        if state_keys:
            loaded = QuantState.from_dict({k[len(state_prefix):]: state_dict[k] for k in state_keys}, self.weight.device)
            if loaded.shape != self._state_meta["shape"]:
                error_msgs.append(f"{prefix}weight: checkpoint shape {tuple(loaded.shape)} != {tuple(self._state_meta['shape'])}")
                return
            self._set_state(loaded)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        unexpected_keys[:] = [k for k in unexpected_keys if k not in state_keys]

    def extra_repr(self) -> str:
        meta = self._state_meta
        lora = f", lora_rank={self.lora_rank}" if self.lora_rank else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"quant_type={meta['quant_type']}, blocksize={meta['blocksize']}, double_quant={'offset' in self._buffers}, "
            f"compute_dtype={self.compute_dtype}{lora}"
        )
