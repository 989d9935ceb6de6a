"""Architecture families: one entry per `ModelSpec.architecture`, holding what the family does
differently (transformers 5.24, `models/<family>/configuration_*.py` and `modeling_*.py`).

A family's entry is the one place its quirks live: the `config.json` reader (`sources.config_json`)
fills a spec's per-model switches (norms per layer, q/k norms, fused projections, experts, windows)
from it, the memory model reads the attention and norm quirks from it (`memory.activations`), and the
Hugging Face builder (`simulate.hf_build.hf_config`, shared by the trace simulator and the validation
harness) builds the family's transformers config class from it. Adding a family is one entry here
(`register`) plus its models in `catalog/models.toml`. Pure data: no torch, no transformers import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WindowLayout = Literal["none", "every_layer", "alternating"]
# The ModelSpec-derived keyword arguments `simulate.hf_build.hf_config` knows how to pass
HF_CONFIG_FIELDS = frozenset({
    "head_dim", "attention_bias", "sliding_window", "sliding_window_pattern", "layer_types",
    "num_local_experts", "num_experts_per_tok", "query_pre_attn_scalar", "attn_logit_softcapping",
    "final_logit_softcapping",
})


@dataclass(frozen=True)
class ModelType:
    """One HF `config.json` `model_type` a family reads: the config class's `tie_word_embeddings`
    default (used when config.json omits it), whether the class derives head_dim = hidden / heads
    (another value gets a note), and how the reading is labelled ('' when exact)."""

    tie_word_embeddings: bool
    head_dim_from_heads: bool = False
    read_as: str = ""


@dataclass(frozen=True)
class Family:
    """One architecture family. Every field is a fact of the family's transformers classes."""

    name: str  # ModelSpec.architecture
    title: str  # how prose names it ("Gemma-2")
    model_types: dict[str, ModelType]  # config.json model_type -> how it is read
    config_class: str  # transformers config class hf_config builds
    source: str  # the transformers files the facts come from
    multimodal_types: tuple[str, ...] = ()  # multimodal model_types whose text_config this family reads
    # keyword arguments hf_config passes from the spec (names in HF_CONFIG_FIELDS) and constants
    hf_config_fields: tuple[str, ...] = ()
    hf_config_constants: dict[str, object] = field(default_factory=dict)
    norms_per_layer: int = 2  # RMSNorms per decoder layer (Gemma-2/3: pre and post around each block)
    qk_norm: bool = False  # per-head RMSNorm on q and k
    qk_norm_fp32_weight_operand: bool = False  # the weight multiply saves fp32 values ((1 + w) x, Gemma-3)
    qkv_bias: bool = False  # q/k/v projections always carry a bias whatever attention_bias says (Qwen2)
    fused_qkv: bool = False  # one qkv_proj Linear
    fused_gate_up: bool = False  # one gate_up_proj Linear
    moe: bool = False  # experts and a router (num_local_experts, num_experts_per_tok)
    supports_sdpa: bool = True  # False: `_supports_sdpa = False`, "sdpa" runs eager
    window_layout: WindowLayout = "none"  # which layers a config.json sliding_window applies to
    default_sliding_window: int | None = None  # the config class's window when the spec gives none
    default_window_pattern: int = 0  # every Nth layer global when config.json has no layer_types
    window_pattern_field: str = ""  # config.json field that overrides default_window_pattern
    attn_logit_softcapping: float | None = None  # tanh cap on attention scores (eager saves its output)
    final_logit_softcapping: float | None = None  # tanh cap on the logits, when the model enables it
    reads_final_logit_softcapping: bool = False  # config.json's final_logit_softcapping is read
    config_head_dim: bool = True  # False: the config class has no head_dim (it derives it)
    class_defaults: dict[str, int] = field(default_factory=dict)  # config class defaults config.json omits

    @property
    def spec_defaults(self) -> dict[str, object]:
        """The ModelSpec switches every model of the family has unless its data says otherwise
        (the catalog and the config.json reader start from these)."""
        return {"norms_per_layer": self.norms_per_layer, "qk_norm": self.qk_norm,
                "fused_qkv": self.fused_qkv, "fused_gate_up": self.fused_gate_up}

    @property
    def alternating_windows(self) -> bool:
        """Sliding-window and global layers alternate: the model builds one 4-D mask of each."""
        return self.window_layout == "alternating"


_FAMILIES: dict[str, Family] = {}
LLAMA_SHAPED = "llama"  # the family a config.json model_type no family reads is planned as


def register(family: Family) -> Family:
    """Add `family` (or replace the entry of that name); returns it. Its fields are checked."""
    unknown = set(family.hf_config_fields) - HF_CONFIG_FIELDS
    if unknown:
        raise ValueError(f"{family.name}: hf_config_fields {sorted(unknown)} not in {sorted(HF_CONFIG_FIELDS)}")
    if family.norms_per_layer < 1:
        raise ValueError(f"{family.name}: norms_per_layer must be at least 1")
    for model_type in family.model_types:
        owner = next((f.name for f in _FAMILIES.values()
                      if model_type in f.model_types and f.name != family.name), None)
        if owner:
            raise ValueError(f"{family.name}: model_type {model_type!r} is already read by {owner}")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (tests that register a dummy one)."""
    _FAMILIES.pop(name, None)


def get_family(name: str) -> Family:
    """The family of `ModelSpec.architecture` `name`; KeyError names the known ones."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(family_names())}") from None


def family_names() -> tuple[str, ...]:
    return tuple(sorted(_FAMILIES))


def families() -> tuple[Family, ...]:
    """Every registered family, by name."""
    return tuple(_FAMILIES[name] for name in family_names())


def text_model_type(multimodal_type: str) -> str:
    """The text_config model_type of a multimodal `multimodal_type` ('' when no family reads it)."""
    for family in _FAMILIES.values():
        if multimodal_type in family.multimodal_types:
            return next(iter(family.model_types))
    return ""


def family_of_model_type(model_type: str) -> tuple[Family, ModelType] | None:
    """The family that reads config.json `model_type`, and how; None for a model type none reads."""
    for family in _FAMILIES.values():
        if model_type in family.model_types:
            return family, family.model_types[model_type]
    return None


_TF = "transformers 5.24, models/"

register(Family(
    name="llama", title="Llama", config_class="LlamaConfig",
    model_types={"llama": ModelType(False, head_dim_from_heads=True),
                 # Gemma 1: llama-shaped layers (GeGLU has the same Linear shapes), GemmaConfig ties
                 "gemma": ModelType(True, read_as="gemma read as llama-shaped")},
    source=_TF + "llama/configuration_llama.py, modeling_llama.py",
    hf_config_fields=("head_dim", "attention_bias"),
))
register(Family(
    name="mistral", title="Mistral", config_class="MistralConfig",
    model_types={"mistral": ModelType(False, head_dim_from_heads=True)},
    source=_TF + "mistral/configuration_mistral.py (sliding_window on every layer), modeling_mistral.py",
    hf_config_fields=("head_dim", "sliding_window"), window_layout="every_layer",
))
register(Family(
    name="mixtral", title="Mixtral", config_class="MixtralConfig",
    model_types={"mixtral": ModelType(False, head_dim_from_heads=True)},
    source=_TF + "mixtral/configuration_mixtral.py, modeling_mixtral.py (MixtralTopKRouter, MixtralExperts)",
    hf_config_fields=("head_dim", "num_local_experts", "num_experts_per_tok", "sliding_window"),
    moe=True,
))
register(Family(
    name="qwen2", title="Qwen2", config_class="Qwen2Config", model_types={"qwen2": ModelType(False)},
    source=_TF + "qwen2/configuration_qwen2.py, modeling_qwen2.py (q/k/v_proj bias=True)",
    hf_config_constants={"use_sliding_window": False}, qkv_bias=True,
))
register(Family(
    name="qwen3", title="Qwen3", config_class="Qwen3Config", model_types={"qwen3": ModelType(False)},
    source=_TF + "qwen3/configuration_qwen3.py, modeling_qwen3.py (Qwen3Attention.q_norm/k_norm)",
    hf_config_fields=("head_dim", "attention_bias"), hf_config_constants={"use_sliding_window": False},
    qk_norm=True, class_defaults={"head_dim": 128},
))
register(Family(
    name="gemma2", title="Gemma-2", config_class="Gemma2Config", model_types={"gemma2": ModelType(True)},
    source=_TF + "gemma2/configuration_gemma2.py (layer_types: every 2nd global), modeling_gemma2.py "
                 "(_supports_sdpa = False: sdpa does not support softcapping)",
    hf_config_fields=("head_dim", "query_pre_attn_scalar", "sliding_window", "layer_types",
                      "attn_logit_softcapping", "final_logit_softcapping"),
    norms_per_layer=4, supports_sdpa=False, window_layout="alternating", default_sliding_window=4096,
    default_window_pattern=2, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
    reads_final_logit_softcapping=True, class_defaults={"head_dim": 256, "sliding_window": 4096},
))
register(Family(
    # the text decoder (Gemma3ForCausalLM), also of the multimodal 4B/12B/27B
    name="gemma3", title="Gemma-3", config_class="Gemma3TextConfig",
    model_types={"gemma3_text": ModelType(True)}, multimodal_types=("gemma3",),
    source=_TF + "gemma3/configuration_gemma3.py (sliding_window_pattern 6), modeling_gemma3.py "
                 "(Gemma3RMSNorm: fp32, (1 + weight))",
    hf_config_fields=("head_dim", "query_pre_attn_scalar", "sliding_window", "sliding_window_pattern", "layer_types",
                      "attn_logit_softcapping", "final_logit_softcapping"),
    norms_per_layer=4, qk_norm=True, qk_norm_fp32_weight_operand=True, window_layout="alternating",
    default_sliding_window=4096, default_window_pattern=6, window_pattern_field="sliding_window_pattern",
    reads_final_logit_softcapping=True,
    class_defaults={"vocab_size": 262_208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131_072, "sliding_window": 4096},
))
register(Family(
    name="phi3", title="Phi-3", config_class="Phi3Config", model_types={"phi3": ModelType(False)},
    source=_TF + "phi3/configuration_phi3.py (no head_dim), modeling_phi3.py (qkv_proj, gate_up_proj)",
    fused_qkv=True, fused_gate_up=True, config_head_dim=False,
))
