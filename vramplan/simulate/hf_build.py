"""The Hugging Face side of a ModelSpec, shared by the trace simulator and the validation harness.

- `hf_config`: the transformers config of the spec's architecture family (`vramplan.families`:
  its config class and fields), with exactly its shapes; sliding windows come from the spec
  (`sliding_window`, `sliding_window_pattern`, which the catalog copies from each config.json),
  never from the model's name.
- `parameter_dtype`: the dtype the float parameters are built in.
- `lora_target_names` / `is_lora_target`: which linears get LoRA. The names come from
  `memory.lora.targeted_linears` (the planner's own decision, peft's rules); a module's
  qualified name matches as peft matches it (`inject.is_target`).
- `LoraLinear` / `add_lora`: peft's `lora.Linear` on a float base, when peft itself is not used.
- `enable_checkpointing`: non-reentrant gradient checkpointing, as both enable it.
- k-bit preparation is `vramplan.torch_nf4.inject.prepare_for_kbit_training` for both.
Torch-side only: the planner core never imports this module.
"""
from __future__ import annotations

import torch
from torch import nn

from vramplan.errors import InputError
from vramplan.families import get_family
from vramplan.memory.lora import targeted_linears
from vramplan.torch_nf4.inject import is_target

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def hf_config(model, num_layers: int | None = None, layer_types: list[str] | None = None):
    """The transformers config of `model` (a ModelSpec), optionally with fewer layers and, for the
    models that alternate sliding-window and global layers (Gemma-2/3), explicit `layer_types`.
    The class and which fields it gets are the family's (`vramplan.families`)."""
    import transformers as tf

    try:
        family = get_family(model.architecture)
    except KeyError as exc:
        raise InputError("architecture", exc.args[0]) from None
    if not family.config_head_dim and model.head_dim != model.hidden_size // model.num_attention_heads:
        raise InputError("head_dim", f"{family.name} derives head_dim from hidden_size / num_attention_heads "
                                     f"({model.hidden_size // model.num_attention_heads}); got {model.head_dim}")
    config_class = getattr(tf, family.config_class, None)
    if config_class is None:
        raise InputError("architecture", f"this transformers has no {family.config_class} ({family.name})")
    spec_fields = {
        "head_dim": model.head_dim,
        "attention_bias": model.attention_bias,
        "sliding_window": model.sliding_window or family.default_sliding_window,
        "sliding_window_pattern": model.sliding_window_pattern or family.default_window_pattern,
        "layer_types": layer_types,
        "num_local_experts": model.num_local_experts,
        "num_experts_per_tok": model.num_experts_per_tok,
        "query_pre_attn_scalar": model.head_dim,
        "attn_logit_softcapping": family.attn_logit_softcapping,
        "final_logit_softcapping": family.final_logit_softcapping if model.final_logit_softcapping else None,
    }
    return config_class(
        hidden_size=model.hidden_size, intermediate_size=model.intermediate_size,
        num_hidden_layers=num_layers or model.num_hidden_layers, num_attention_heads=model.num_attention_heads,
        num_key_value_heads=model.num_key_value_heads, vocab_size=model.vocab_size,
        tie_word_embeddings=model.tie_word_embeddings,
        max_position_embeddings=model.max_position_embeddings,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False,
        **{name: spec_fields[name] for name in family.hf_config_fields}, **family.hf_config_constants,
    )


def parameter_dtype(run, dtypes) -> torch.dtype:
    """The dtype the float model is built in. A quantized base loads in the compute dtype (as
    transformers' bitsandbytes integration does; k-bit preparation then casts what stays float);
    a trained float model in the dtype its parameters train in (fp32 master weights for mixed full
    fine-tuning); LoRA's frozen base and float inference in the weight format."""
    if dtypes.base_quantized:
        return TORCH_DTYPES[dtypes.compute]
    if run.method == "full":
        return TORCH_DTYPES[dtypes.float_weights]
    return TORCH_DTYPES[dtypes.weight_format]


def lora_target_names(model, run, dtypes) -> tuple[str, ...]:
    """The decoder-layer linear names that get LoRA (empty when the run has no LoRA)."""
    if not run.uses_lora:
        return ()
    return tuple(sorted({lin.name for lin in targeted_linears(model, run.lora_targets, dtypes.moe_experts)}))


def is_lora_target(qualified_name: str, names) -> bool:
    """Whether the module at `qualified_name` is one of the LoRA target `names`."""
    return bool(names) and is_target(qualified_name, names)


def enable_checkpointing(hf_model) -> None:
    """Non-reentrant gradient checkpointing (transformers 5.2x renamed it activation checkpointing)."""
    kwargs = {"use_reentrant": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):
        hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def decoder_layers(hf_model):
    return hf_model.model.layers


class LoraLinear(nn.Module):
    """peft `lora.Linear` on a float base: base(x) + lora_B(lora_A(dropout(x.to(A.dtype)))) * scaling,
    cast back to the base output's dtype (peft/tuners/lora/layer.py, Linear.forward); B starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, dtype: torch.dtype):
        super().__init__()
        self.base_layer = base
        device = base.weight.device
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=device, dtype=dtype)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank

    def forward(self, x):
        result = self.base_layer(x)
        update = self.lora_B(self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype)))) * self.scaling
        return (result + update).to(result.dtype)


def add_lora(hf_model, run, dtypes, names) -> None:
    """Freeze the model and wrap every targeted decoder linear in a LoraLinear."""
    hf_model.requires_grad_(False)
    for layer in decoder_layers(hf_model):
        for qualified, module in list(layer.named_modules()):
            if isinstance(module, nn.Linear) and is_lora_target(qualified, names):
                parent_name, _, attr = qualified.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                setattr(parent, attr, LoraLinear(module, run.lora_rank, run.resolved_lora_alpha, run.lora_dropout,
                                                 TORCH_DTYPES[dtypes.lora]))
