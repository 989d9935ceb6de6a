"""HF `config.json` (already parsed to a dict) -> ModelSpec, and its pre-quantized format."""
from __future__ import annotations

from typing import Any

from vramplan.errors import InputError, from_validation_error
from vramplan.families import (LLAMA_SHAPED, Family, ModelType, families, family_of_model_type, get_family,
                               text_model_type)
from vramplan.sources.config_fields import read_bool, read_count, read_name, read_number, read_strings, shown
from vramplan.specs.bounds import MODEL_BOUNDS
from vramplan.specs.model import ModelSpec

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_OPTIONAL_COUNTS = ("num_key_value_heads", "head_dim", "max_position_embeddings", "num_local_experts",
                    "num_experts_per_tok", "sliding_window")


# Fields whose memory effect the planner does not model, by what it assumes instead.
_MLA_FIELDS = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
_MOE_FIELDS = ("num_experts", "n_routed_experts", "moe_intermediate_size", "n_shared_experts")
_KNOWN_ROPE = ("default", "linear", "dynamic", "llama3", "yarn", "longrope", "su", "proportional")


def _text_config(cfg: dict[str, Any], origin: str) -> tuple[dict[str, Any], str, str]:
    """The language-model part of a config, the multimodal model_type ('' if none) and the prefix
    its fields are named with; multimodal configs nest it under text_config."""
    where = f"{origin}: "
    top_type = read_name(cfg, "model_type", where)
    nested = cfg.get("text_config")
    if nested is not None and not isinstance(nested, dict):
        raise InputError(f"{where}text_config", f"must be a JSON object (got {shown(nested)})")
    if nested and "hidden_size" not in cfg:
        where = f"{origin}: text_config."
        model_type = read_name(nested, "model_type", where) or text_model_type(top_type)
        text = {**nested, "model_type": model_type, "quantization_config": cfg.get("quantization_config")}
        return text, top_type, where
    return cfg, "", where


def _window_pattern(cfg: dict[str, Any], family: Family, where: str) -> int:
    """Every Nth layer global: from `layer_types` when the config lists them, else the family's config
    class default (Gemma2Config: every 2nd; Gemma3TextConfig: `sliding_window_pattern`, 6)."""
    types = read_strings(cfg, "layer_types", where)
    if types and "full_attention" in types:
        return types.index("full_attention") + 1
    if not family.window_pattern_field:
        return family.default_window_pattern
    return read_count(cfg, family.window_pattern_field, where, 1, MODEL_BOUNDS["sliding_window_pattern"][1],
                      family.default_window_pattern)


def _checked(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """`cfg` with every field the planner reads type- and range-checked (config_fields); a config.json
    count is at least 1 (0 is ModelSpec's own 'derive it', which no config means)."""
    checked = dict(cfg)
    for key in _REQUIRED + _OPTIONAL_COUNTS:
        low, high = MODEL_BOUNDS[key]
        checked[key] = read_count(cfg, key, where, 0 if key == "sliding_window" else max(low, 1), high)
    for key in ("tie_word_embeddings", "attention_bias"):
        checked[key] = read_bool(cfg, key, where)
    checked["final_logit_softcapping"] = read_number(cfg, "final_logit_softcapping", where)
    return checked


def _family(model_type: str) -> tuple[Family, ModelType, bool]:
    """The family that reads `model_type`, how, and whether it is known; an unknown model type is
    read as llama-shaped (its config class's defaults: untied, head_dim = hidden / heads)."""
    found = family_of_model_type(model_type)
    if found is None:
        return get_family(LLAMA_SHAPED), ModelType(False, head_dim_from_heads=True), False
    return (*found, True)


def assumption_notes(cfg: dict[str, Any], model_type: str, head_dim: int, multimodal_type: str = "") -> list[str]:
    """What the plan assumes for fields of `cfg` it does not model (MLA, MoE, windows, q/k norms,
    head_dim), one sentence each; [] for a config the planner models fully. What a family models is
    its registry entry's (`vramplan.families`). Untrusted values are quoted with `shown` (short, one line)."""
    family, reading, known = _family(model_type)
    notes = []
    label = f"model_type '{model_type or '?'}'"
    if not known:
        notes.append(f"{label} is not modelled: planned as llama-shaped layers (q/k/v/o projections, "
                     "gated MLP, 2 RMSNorms per layer)")
    if any(cfg.get(field) for field in _MLA_FIELDS):
        notes.append(f"{label}: latent attention (MLA: kv_lora_rank, ...) is not modelled: planned as "
                     f"standard attention with {cfg.get('num_key_value_heads') or cfg['num_attention_heads']} "
                     "KV heads, so weights and KV cache may be overstated")
    if not family.moe and any(cfg.get(field) for field in _MOE_FIELDS):
        notes.append(f"{label}: mixture-of-experts fields ({', '.join(f for f in _MOE_FIELDS if cfg.get(f))}) "
                     "are not modelled: planned as one dense MLP of intermediate_size")
    window = cfg.get("sliding_window")
    if window and family.window_layout == "none" and cfg.get("use_sliding_window") is not False:
        notes.append(f"{label}: sliding_window {window} is not modelled: KV cache and attention "
                     "planned over every token in every layer")
    if not family.qk_norm and (cfg.get("qk_layernorm") or cfg.get("use_qk_norm")):
        notes.append(f"{label}: q/k normalization is not modelled (its weights and saved activations "
                     "are missing from the plan)")
    if reading.head_dim_from_heads and head_dim and head_dim * cfg["num_attention_heads"] != cfg["hidden_size"]:
        notes.append(f"head_dim {head_dim} is not hidden_size / num_attention_heads "
                     f"({cfg['hidden_size']} / {cfg['num_attention_heads']}): q/o projections and "
                     f"KV cache planned with head_dim {head_dim}")
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    rope_type = (rope.get("rope_type") or rope.get("type") or "") if isinstance(rope, dict) else ""
    rope_type = rope_type if isinstance(rope_type, str) else shown(rope_type)
    if rope_type and rope_type not in _KNOWN_ROPE:
        notes.append(f"rope_type {shown(rope_type)} is not known: planned as standard RoPE (cos/sin tables only)")
    if cfg.get("attn_logit_softcapping") and family.attn_logit_softcapping is None:
        capped = ", ".join(f.title for f in families() if f.attn_logit_softcapping is not None)
        notes.append(f"{label}: attn_logit_softcapping is modelled for {capped} only: planned with the "
                     "attention implementation asked for (transformers may need eager, which saves s^2 scores)")
    if cfg.get("attention_chunk_size"):
        notes.append(f"{label}: chunked attention (attention_chunk_size {shown(cfg['attention_chunk_size'])}) is not "
                     "modelled: KV cache planned over every token")
    if multimodal_type:
        notes.append(f"'{multimodal_type}' is multimodal: planned is its text decoder (text_config); "
                     "the vision tower and image tokens are not")
    return notes


def spec_from_config(cfg: Any, name: str = "", origin: str = "config.json") -> ModelSpec:
    """A ModelSpec from a config.json dict; unknown llama-like model types read as llama. The
    family's switches (norms per layer, q/k norms, fused projections, experts, windows) come from
    its registry entry (`vramplan.families`).

    Every field read is checked for its JSON type and for ModelSpec's bounds (config_fields):
    a wrong type or an out-of-range count is an InputError, never coerced."""
    if not isinstance(cfg, dict):
        raise InputError(origin, "must be a JSON object")
    cfg, multimodal_type, where = _text_config(cfg, origin)
    model_type = read_name(cfg, "model_type", where)
    family, reading, known = _family(model_type)
    # what the config class fills in when config.json omits a field: the Hub's Gemma-3 4B/12B/27B
    # text_config leaves out vocab_size, heads and context
    defaults = family.class_defaults if known else {}
    cfg = {**cfg, **{field: value for field, value in defaults.items() if cfg.get(field) is None}}
    missing = [field for field in _REQUIRED if cfg.get(field) is None]
    if missing:
        raise InputError(origin, f"missing '{missing[0]}' (model_type '{model_type or '?'}')")
    cfg = _checked(cfg, where)
    source = f"config.json: {origin}"
    if not known:
        source += f" (model_type '{model_type or '?'}' read as llama)"
    elif reading.read_as:
        source += f" ({reading.read_as})"
    fields: dict[str, Any] = {field: cfg[field] for field in _REQUIRED}
    tied = cfg["tie_word_embeddings"]
    fields.update(
        architecture=family.name,
        num_key_value_heads=cfg["num_key_value_heads"] or 0,
        head_dim=cfg["head_dim"] or 0,
        tie_word_embeddings=reading.tie_word_embeddings if tied is None else tied,
        attention_bias=family.qkv_bias or bool(cfg["attention_bias"]),
        # transformers' own default when a config leaves it out; an explicit value is checked
        max_position_embeddings=cfg["max_position_embeddings"] or 4096,
        **family.spec_defaults,
        notes=tuple(assumption_notes(cfg, model_type, cfg["head_dim"] or 0, multimodal_type)),
    )
    if family.moe or cfg["num_local_experts"]:
        fields["num_local_experts"] = cfg["num_local_experts"] or 1
        fields["num_experts_per_tok"] = cfg["num_experts_per_tok"] or 1
    if family.reads_final_logit_softcapping:
        fields["final_logit_softcapping"] = cfg["final_logit_softcapping"] is not None
    if family.window_layout != "none" and cfg["sliding_window"]:
        pattern = _window_pattern(cfg, family, where) if family.alternating_windows else 0
        fields.update(sliding_window=cfg["sliding_window"], sliding_window_pattern=pattern)
    path_name = cfg.get("_name_or_path")
    path_name = path_name if isinstance(path_name, str) and path_name.isprintable() else ""
    try:
        return ModelSpec(name=name or path_name or model_type or "model", source=source, **fields)
    except Exception as exc:  # pydantic.ValidationError
        raise from_validation_error(exc, prefix=where) from None


def weight_format_from_config(cfg: Any, origin: str = "config.json") -> str | None:
    """'nf4', 'fp4', 'int8', 'gptq-4bit', 'gptq-8bit' or 'awq-4bit' from quantization_config; None
    for a float checkpoint or a method the planner does not know. Its flags are read strictly
    (`"load_in_4bit": "false"` is an InputError, not a 4-bit model)."""
    if not isinstance(cfg, dict):
        return None
    qc = _text_config(cfg, origin)[0].get("quantization_config")
    if qc is None:
        return None
    where = f"{origin}: quantization_config."
    if not isinstance(qc, dict):
        raise InputError(where[:-1], f"must be a JSON object (got {shown(qc)})")
    method = read_name(qc, "quant_method", where).lower()
    if method == "bitsandbytes" or "load_in_4bit" in qc or "load_in_8bit" in qc:
        if read_bool(qc, "load_in_4bit", where, False):
            return "fp4" if read_name(qc, "bnb_4bit_quant_type", where, "fp4").lower() == "fp4" else "nf4"
        if read_bool(qc, "load_in_8bit", where, False):
            return "int8"
        return None
    if method in ("gptq", "awq"):
        bits = read_count(qc, "bits", where, 1, 64, 4)
        if method == "gptq":
            return f"gptq-{bits}bit" if bits in (4, 8) else None
        return "awq-4bit" if bits == 4 else None
    return None
