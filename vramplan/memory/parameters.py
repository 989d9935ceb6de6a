"""The parameter tensors of a decoder-only transformer, grouped by shape.

A `TensorGroup` is `count` tensors of shape (rows, cols); vectors have ndim 1 and cols 1. The
memory model sums bytes per tensor (each tensor is its own allocation), so keeping
tensors separate matters for allocator rounding, 8-bit optimizer thresholds and
Adafactor's factored state.
"""
from __future__ import annotations

from typing import NamedTuple

from vramplan.specs.model import ModelSpec


class TensorGroup(NamedTuple):
    name: str
    rows: int
    cols: int
    count: int
    ndim: int = 2

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    @property
    def is_matrix(self) -> bool:
        return self.ndim >= 2


def linear_weight_groups(model: ModelSpec, moe_experts: str = "linear") -> list[TensorGroup]:
    """Weights (out x in) of every `nn.Linear` inside the decoder layers."""
    layers = model.num_hidden_layers
    return [
        TensorGroup(f"{lin.name}.weight", lin.out_features, lin.in_features, lin.count * layers)
        for lin in model.layer_linears(moe_experts)
    ]


def linear_bias_groups(model: ModelSpec, moe_experts: str = "linear") -> list[TensorGroup]:
    layers = model.num_hidden_layers
    return [
        TensorGroup(f"{lin.name}.bias", lin.out_features, 1, lin.count * layers, ndim=1)
        for lin in model.layer_linears(moe_experts)
        if lin.bias
    ]


def fused_expert_groups(model: ModelSpec, moe_experts: str = "linear") -> list[TensorGroup]:
    """transformers >= 5 MoE parameters that are not nn.Linear, per layer: the router weight (E x h)
    and the experts' `gate_up_proj` [E, 2i, h] and `down_proj` [E, h, i] (modeling_mixtral.py,
    MixtralTopKRouter / MixtralExperts). A 3-D tensor is one allocation: rows = E x its first dim."""
    if not (model.is_moe and moe_experts == "fused"):
        return []
    e, h, i, layers = model.num_local_experts, model.hidden_size, model.intermediate_size, model.num_hidden_layers
    return [
        TensorGroup("gate.weight", e, h, layers),
        TensorGroup("experts.gate_up_proj", e * 2 * i, h, layers, ndim=3),
        TensorGroup("experts.down_proj", e * h, i, layers, ndim=3),
    ]


def norm_groups(model: ModelSpec) -> list[TensorGroup]:
    """RMSNorm weights: `norms_per_layer` per layer plus the final norm."""
    per_layer = model.norms_per_layer * model.num_hidden_layers
    return [TensorGroup("norm.weight", model.hidden_size, 1, per_layer + 1, ndim=1)]


def qk_norm_groups(model: ModelSpec) -> list[TensorGroup]:
    """Per-head q and k RMSNorm weights (head_dim each), two per layer where the model has them:
    `Qwen3Attention.q_norm/k_norm`, `Gemma3Attention.q_norm/k_norm` (transformers modeling files)."""
    if not model.qk_norm:
        return []
    return [TensorGroup("qk_norm.weight", model.head_dim, 1, 2 * model.num_hidden_layers, ndim=1)]


def embedding_groups(model: ModelSpec) -> list[TensorGroup]:
    """Token embedding, and the lm_head unless tied to it."""
    groups = [TensorGroup("embed_tokens.weight", model.vocab_size, model.hidden_size, 1)]
    if not model.tie_word_embeddings:
        groups.append(TensorGroup("lm_head.weight", model.vocab_size, model.hidden_size, 1))
    return groups


def unquantized_groups(model: ModelSpec, moe_experts: str = "linear") -> list[TensorGroup]:
    """What bitsandbytes leaves in a float dtype: embeddings, lm_head, norms, biases, and with
    fused MoE experts (transformers >= 5) the router and the experts themselves."""
    return (embedding_groups(model) + norm_groups(model) + qk_norm_groups(model) + linear_bias_groups(model, moe_experts)
            + fused_expert_groups(model, moe_experts))


def all_parameter_groups(model: ModelSpec, moe_experts: str = "linear") -> list[TensorGroup]:
    return linear_weight_groups(model, moe_experts) + unquantized_groups(model, moe_experts)


def count_elements(groups) -> int:
    return sum(group.numel * group.count for group in groups)


def parameter_count(model: ModelSpec) -> int:
    """Total parameters, as `sum(p.numel() for p in model.parameters())` counts them."""
    return count_elements(all_parameter_groups(model))
