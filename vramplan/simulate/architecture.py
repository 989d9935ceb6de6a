"""Build the real Hugging Face architecture of a ModelSpec on fake tensors, as a CUDA run has it.

- The config, parameter dtype, LoRA targets and wrapping are `vramplan.simulate.hf_build`'s, shared with the
  validation harness; k-bit preparation is `vramplan.torch_nf4.inject.prepare_for_kbit_training`.
- Attention: CPU kernels save other tensors than CUDA's, so every attention that a CUDA run
  would send to SDPA's flash / memory-efficient kernel goes through `FlashAttention`, an
  autograd Function that saves exactly what the CUDA flash kernel saves (q, k, v, the output
  in [b, s, h, d] layout and the fp32 logsumexp [b, h, s]) and whose backward allocates what
  flash-attn 2's `mha_bwd` does (fp32 dq accumulator and softmax_d, expanded dk/dv for GQA).
  It is registered through transformers' own `AttentionInterface` and `AttentionMaskInterface`
  (no 4-D mask, like flash_attention_2). Eager attention runs the real eager code.
- Dropout: CPU's `dropout` multiplies by a saved fp32 noise tensor; CUDA's fused
  `native_dropout` saves a 1-byte bool mask. `cuda_like_kernels` routes dropout to
  `native_dropout` (its autograd formula saves the mask, as on CUDA).
- MoE (transformers >= 5 fused experts): transformers' default `grouped_mm` experts path calls
  `torch.nn.functional.grouped_mm` on the input cast to the experts' dtype (not autocast). Its
  meta kernel takes bf16 only while the CUDA kernel also runs fp32/fp16 (a per-group fallback), so
  `GroupedMM` stands in for it: one output in the input dtype, and the saved set of aten's
  `GroupedMmBackward0` (the weight if the input needs a gradient, the input if the weight does;
  the weight gradient in the weight's strides, as `_grouped_mm_mat2_backward` writes it).
- NF4: the decoder linears become `vramplan.torch_nf4.linear.NF4Linear` holding fake packed codes
  and QuantState tensors of bitsandbytes' shapes. Dequantization is replaced by one output
  allocation in the compute dtype, which is what the CUDA kernels (bitsandbytes', ours) write.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from vramplan.simulate.hf_build import TORCH_DTYPES, decoder_layers, hf_config, is_lora_target, parameter_dtype

__all__ = ["TORCH_DTYPES", "hf_config", "build_model", "cuda_like_kernels", "quantize_decoder_linears"]

SIM_ATTENTION = "vramplan_cuda_sdpa"


class FlashAttention(torch.autograd.Function):
    """Shapes and saved tensors of CUDA flash attention (q, k, v in [b, heads, s, d])."""

    @staticmethod
    def forward(ctx, query, key, value):
        b, heads, s, d = query.shape
        out = query.new_empty(b, s, heads, d)  # flash writes [b, s, h, d]; transformers wants that layout
        logsumexp = query.new_empty(b, heads, s, dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, _out, _lse = ctx.saved_tensors
        b, heads, s, d = query.shape
        s_rounded, d_rounded = -(-s // 128) * 128, -(-d // 32) * 32
        dq_accum = query.new_empty(b, heads, s_rounded, d_rounded, dtype=torch.float32)  # noqa: F841
        softmax_d = query.new_empty(b, heads, s_rounded, dtype=torch.float32)  # noqa: F841
        grad_query = torch.empty_like(query)
        if key.shape[1] != heads:  # GQA: flash computes per query head, then sums the groups
            grad_key = query.new_empty(b, heads, s, d).unflatten(1, (key.shape[1], -1)).sum(2)
            grad_value = query.new_empty(b, heads, s, d).unflatten(1, (key.shape[1], -1)).sum(2)
        else:
            grad_key, grad_value = torch.empty_like(key), torch.empty_like(value)
        return grad_query, grad_key, grad_value


def flash_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if torch.is_autocast_enabled("cpu"):  # sdpa is on CUDA autocast's lower-precision list
        dtype = torch.get_autocast_dtype("cpu")
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    return FlashAttention.apply(query, key, value), None


class GroupedMM(torch.autograd.Function):
    """`grouped_mm(input [S, k], weight [E, k, n], offs)` as aten's autograd saves and allocates it."""

    @staticmethod
    def forward(ctx, input, weight, offs):
        needs_input, needs_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(weight if needs_input else None, input if needs_weight else None)
        ctx.weight_shape, ctx.weight_stride = weight.shape, weight.stride()
        return input.new_empty(input.shape[0], weight.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        weight, input = ctx.saved_tensors
        grad_input = grad_out.new_empty(grad_out.shape[0], ctx.weight_shape[-2]) if weight is not None else None
        # _grouped_mm_mat2_backward takes mat2's strides: the gradient of the transposed expert
        # weight comes out in the parameter's own layout, so AccumulateGrad keeps it without a copy
        grad_weight = (grad_out.new_empty_strided(ctx.weight_shape, ctx.weight_stride)
                       if input is not None else None)
        return grad_input, grad_weight, None


def cuda_like_grouped_mm(input, weight, offs):
    """transformers.integrations.moe._grouped_mm with the CUDA kernel's dtype rules (see GroupedMM)."""
    return GroupedMM.apply(input.to(weight.dtype), weight, offs)


@contextlib.contextmanager
def cuda_like_moe():
    import transformers.integrations.moe as moe

    original = moe._grouped_mm
    moe._grouped_mm = cuda_like_grouped_mm
    try:
        yield
    finally:
        moe._grouped_mm = original


def _no_mask(*args, **kwargs):
    return None


def register_flash_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(SIM_ATTENTION, flash_attention_forward)
    AttentionMaskInterface.register(SIM_ATTENTION, _no_mask)


def build_model(model_spec, num_layers: int, run, dtypes, layer_types: list[str] | None = None):
    """The HF causal LM with `num_layers` layers, parameters in the run's float dtype, on the current (fake) mode."""
    from transformers import AutoModelForCausalLM

    register_flash_attention()
    config = hf_config(model_spec, num_layers, layer_types)
    from vramplan.memory.activations import effective_attention

    # Gemma-2 has no SDPA path in transformers: "sdpa" runs eager there, as on a GPU
    attention = "eager" if effective_attention(model_spec, run) == "eager" else SIM_ATTENTION
    float_dtype = parameter_dtype(run, dtypes)
    with _quiet_transformers():  # Gemma-2 refuses sdpa at construction: build eager, then switch
        hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=float_dtype)
    for module in hf_model.modules():
        module_config = getattr(module, "config", None)
        if module_config is not None:
            module_config._attn_implementation_internal = attention
    return hf_model


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


# -- NF4 ----------------------------------------------------------------------------------
def fake_nf4_linear(linear: nn.Linear, run, dtypes, lora_rank: int):
    """An NF4Linear with packed codes and QuantState of bitsandbytes' shapes (values unset)."""
    from vramplan.torch_nf4.linear import NF4Linear
    from vramplan.torch_nf4.state import QuantState

    out_features, in_features = linear.weight.shape
    numel = out_features * in_features
    blocks = -(-numel // run.quant_blocksize)
    compute = TORCH_DTYPES[dtypes.compute]
    packed = torch.empty(-(-numel // 2), 1, dtype=torch.uint8)
    if run.double_quant:
        state = QuantState(
            absmax=torch.empty(blocks, dtype=torch.uint8), shape=torch.Size([out_features, in_features]),
            dtype=compute, blocksize=run.quant_blocksize, quant_type=dtypes.weight_format,
            code=torch.empty(16), offset=torch.empty(()), nested_absmax=torch.empty(-(-blocks // 256)),
            nested_code=torch.empty(256))
    else:
        state = QuantState(absmax=torch.empty(blocks), shape=torch.Size([out_features, in_features]),
                           dtype=compute, blocksize=run.quant_blocksize, quant_type=dtypes.weight_format,
                           code=torch.empty(16))
    bias = linear.bias
    return NF4Linear(packed, state, bias, compute_dtype=compute, lora_rank=lora_rank,
                     lora_alpha=run.resolved_lora_alpha, lora_dropout=run.lora_dropout,
                     lora_dtype=TORCH_DTYPES[dtypes.lora])


def _native_dropout(input, p=0.5, training=True, inplace=False):
    if not training or p == 0:
        return input
    return torch.native_dropout(input, p, True)[0]


@contextlib.contextmanager
def cuda_like_kernels():
    """Dropout, NF4 dequantization and MoE grouped matmuls as their CUDA kernels allocate and save."""
    import torch.nn.functional as F

    original = F.dropout
    F.dropout = _native_dropout
    try:
        with cuda_like_nf4(), cuda_like_moe():
            yield
    finally:
        F.dropout = original


def cuda_like_dequantize(packed, state, dtype=None, backend="auto"):
    """The CUDA dequant kernels write the output once: one [out, in] tensor in `dtype`."""
    return packed.new_empty(tuple(state.shape), dtype=dtype or state.dtype)


@contextlib.contextmanager
def cuda_like_nf4():
    import vramplan.torch_nf4.linear as nf4_linear

    original = nf4_linear.dequantize_4bit
    nf4_linear.dequantize_4bit = cuda_like_dequantize
    try:
        yield
    finally:
        nf4_linear.dequantize_4bit = original


def quantize_decoder_linears(hf_model, run, dtypes, lora_names, lora_rank: int):
    """Swap every nn.Linear inside the decoder layers for a fake NF4Linear (+ LoRA where targeted)."""
    for layer in decoder_layers(hf_model):
        for qualified, module in list(layer.named_modules()):
            if isinstance(module, nn.Linear):
                parent_name, _, attr = qualified.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                rank = lora_rank if is_lora_target(qualified, lora_names) else 0
                setattr(parent, attr, fake_nf4_linear(module, run, dtypes, rank))
