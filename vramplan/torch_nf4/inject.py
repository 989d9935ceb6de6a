"""Turn a Hugging Face causal LM into a QLoRA model with the bundled NF4 layer.

Which layers are replaced follows transformers' bitsandbytes integration: every `nn.Linear`
except the output embedding (lm_head); embeddings and norms stay in a float dtype. Targeted
linears get a LoRA adapter (peft's name matching: exact name or `.name` suffix, or
"all-linear"); the others become NF4 without one. `prepare_for_kbit_training` does to dtypes
and `requires_grad` what peft's `prepare_model_for_kbit_training` does.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vramplan.torch_nf4.linear import NF4Linear

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_target(name: str, target_modules: str | Iterable[str]) -> bool:
    """peft's match of a module's qualified name: "all-linear", or a key equal to the name or to
    its end after a dot (peft/tuners/tuners_utils.py, `check_target_module_exists`)."""
    if target_modules == "all-linear":
        return True
    return any(name == key or name.endswith("." + key) for key in target_modules)


def quantize_model_to_nf4_lora(
    model: nn.Module,
    target_modules: str | Iterable[str] = DEFAULT_TARGETS,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    blocksize: int = 64,
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.bfloat16,
    quant_type: str = "nf4",
    lora_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Replace `model`'s linears (lm_head excepted) in place by NF4Linear; returns `model`.

    Each weight is quantized on its own device and the original module dropped before the
    next one, so the peak is one float weight above the quantized model.
    """
    if isinstance(target_modules, str) and target_modules != "all-linear":
        target_modules = (target_modules,)
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output_embeddings
    ]
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child_name)
        targeted = is_target(name, target_modules)
        replacement = NF4Linear.from_linear(
            linear,
            blocksize=blocksize,
            double_quant=double_quant,
            quant_type=quant_type,
            compute_dtype=compute_dtype,
            lora_rank=rank if targeted else 0,
            lora_alpha=alpha,
            lora_dropout=dropout,
            lora_dtype=lora_dtype,
        )
        if replacement.bias is not None:
            replacement.bias.requires_grad_(False)
        setattr(parent, child_name, replacement)
        del linear
    return model


def _is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or name.startswith(("lora_A.", "lora_B."))


def prepare_for_kbit_training(
    model: nn.Module, use_gradient_checkpointing: bool = True, gradient_checkpointing_kwargs: dict | None = None
) -> nn.Module:
    """peft `prepare_model_for_kbit_training` for our NF4 layers: freeze every base parameter,
    cast every fp16/bf16 parameter that is not a packed 4-bit weight to fp32 (embeddings,
    untied lm_head, norms, biases), then optionally enable gradient checkpointing (with input
    require-grads for the reentrant variant). LoRA adapters stay trainable in their dtype.
    """
    for name, param in model.named_parameters():
        if _is_lora_parameter(name):
            continue
        param.requires_grad = False
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)
    if use_gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        kwargs = gradient_checkpointing_kwargs or {}
        if kwargs.get("use_reentrant", True) and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 name; the old one warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model
