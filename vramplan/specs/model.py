"""ModelSpec: the architecture numbers the memory model needs, nothing else.

A spec comes from the bundled catalog, an HF `config.json`, a local model folder or a
safetensors header; `layer_linears()` lists the `nn.Linear` modules of one decoder layer
with the names Hugging Face uses (the names LoRA `target_modules` match).

Every count has an upper bound (`vramplan.specs.bounds.MODEL_BOUNDS`, with the largest real
values it was checked against) far above any published model, so that a hostile or mistyped
config is refused here instead of planned; so is a model of more than `MAX_PARAMETERS` in all.
"""
from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vramplan.families import family_names
from vramplan.specs.bounds import MAX_PARAMETERS, MODEL_BOUNDS


def _bounded(field: str, default: int | None = None, **extra):
    low, high = MODEL_BOUNDS[field]
    if default is None:
        return Field(ge=low, le=high, **extra)
    return Field(default=default, ge=low, le=high, **extra)




class LinearShape(NamedTuple):
    """One kind of `nn.Linear` in a decoder layer; `count` copies of it (MoE experts)."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    count: int = 1


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str = Field(default="llama", description="the architecture family (vramplan.families)")
    hidden_size: int = _bounded("hidden_size")
    intermediate_size: int = _bounded("intermediate_size")
    num_hidden_layers: int = _bounded("num_hidden_layers")
    num_attention_heads: int = _bounded("num_attention_heads")
    num_key_value_heads: int = _bounded("num_key_value_heads", 0, description="0 means same as attention heads")
    head_dim: int = _bounded("head_dim", 0, description="0 means hidden_size // num_attention_heads")
    vocab_size: int = _bounded("vocab_size")
    tie_word_embeddings: bool = False
    num_local_experts: int = _bounded("num_local_experts", 1)
    num_experts_per_tok: int = _bounded("num_experts_per_tok", 1)
    attention_bias: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    norms_per_layer: int = _bounded("norms_per_layer", 2)
    final_logit_softcapping: bool = False
    qk_norm: bool = Field(default=False, description="RMSNorm over head_dim on q and k (Qwen3, Gemma-3)")
    sliding_window: int = _bounded("sliding_window", 0, description="local attention window in tokens; 0 = none")
    sliding_window_pattern: int = _bounded(
        "sliding_window_pattern", 0, description="every Nth layer is global, the others local; 0 = every layer local")
    max_position_embeddings: int = _bounded("max_position_embeddings", 4096)
    hf_id: str = ""
    checkpoint_path: str = Field(
        default="", description="local folder the spec was read from (what from_pretrained loads); '' if none")
    source: str = "catalog"
    stored_weight_format: str = Field(
        default="", description="format of a pre-quantized checkpoint (nf4, gptq-4bit, ...); '' if float")
    checkpoint_parameters: int = _bounded("checkpoint_parameters", 0, description="exact count from safetensors headers; 0 if unread")
    notes: tuple[str, ...] = Field(
        default=(), description="what was assumed for config fields the planner does not model")

    @field_validator("architecture")
    @classmethod
    def _known_family(cls, name: str) -> str:
        if name not in family_names():
            raise ValueError(f"unknown architecture {name!r}; known: {', '.join(family_names())}")
        return name

    @model_validator(mode="after")
    def _derive(self) -> "ModelSpec":
        if self.num_key_value_heads == 0:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim == 0:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"head_dim: hidden_size {self.hidden_size} is not divisible by "
                    f"num_attention_heads {self.num_attention_heads}; give head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads: {self.num_key_value_heads} must divide "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_experts_per_tok > self.num_local_experts:
            raise ValueError("num_experts_per_tok: must be at most num_local_experts")
        if self.parameter_bound_count > MAX_PARAMETERS:
            raise ValueError(f"hidden_size: these sizes make {self.parameter_bound_count:.3g} parameters; "
                             f"at most 2**44 ({MAX_PARAMETERS:.3g}) are planned")
        return self

    @property
    def parameter_bound_count(self) -> int:
        """Decoder-layer linears x layers + input and output embeddings (norms and biases left out):
        the count MAX_PARAMETERS bounds, in exact integers."""
        per_layer = sum(lin.in_features * lin.out_features * lin.count for lin in self.layer_linears())
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return per_layer * self.num_hidden_layers + embeddings

    @property
    def sliding_window_layers(self) -> int:
        """Layers with local attention: layer i is global when (i + 1) % pattern == 0, as transformers'
        Gemma2/Gemma3 configs build `layer_types`; with no pattern every layer is local (Mistral's
        `sliding_window`: cache_utils.get_layer_types_and_kwargs). They see the last `sliding_window` tokens."""
        if not self.sliding_window:
            return 0
        if not self.sliding_window_pattern:
            return self.num_hidden_layers
        return self.num_hidden_layers - self.num_hidden_layers // self.sliding_window_pattern

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 1

    def layer_linears(self, moe_experts: str = "linear") -> tuple[LinearShape, ...]:
        """The `nn.Linear` modules of one decoder layer, named as in transformers.

        `moe_experts` is the MoE layout: "linear" (transformers 4.x) has the router `gate` and
        one w1/w3/w2 nn.Linear per expert; "fused" (transformers >= 5, modeling_mixtral.py) has
        neither - the router is a `MixtralTopKRouter` holding a bare weight and the experts are
        two 3-D parameters (`memory.parameters.fused_expert_groups`) - so only attention is left.
        """
        h, i = self.hidden_size, self.intermediate_size
        bias = self.attention_bias
        if self.fused_qkv:
            attention = [LinearShape("qkv_proj", h, self.q_dim + 2 * self.kv_dim, bias)]
        else:
            attention = [
                LinearShape("q_proj", h, self.q_dim, bias),
                LinearShape("k_proj", h, self.kv_dim, bias),
                LinearShape("v_proj", h, self.kv_dim, bias),
            ]
        attention.append(LinearShape("o_proj", self.q_dim, h))
        if self.is_moe and moe_experts == "fused":
            mlp = []
        elif self.is_moe:
            e = self.num_local_experts
            mlp = [
                LinearShape("gate", h, e),
                LinearShape("w1", h, i, count=e),
                LinearShape("w3", h, i, count=e),
                LinearShape("w2", i, h, count=e),
            ]
        elif self.fused_gate_up:
            mlp = [LinearShape("gate_up_proj", h, 2 * i), LinearShape("down_proj", i, h)]
        else:
            mlp = [
                LinearShape("gate_proj", h, i),
                LinearShape("up_proj", h, i),
                LinearShape("down_proj", i, h),
            ]
        return tuple(attention + mlp)
