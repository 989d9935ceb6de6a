"""HF `config.json` (already parsed to a dict) -> ModelSpec, and its pre-quantized format."""
from __future__ import annotations

from typing import Any

from vramplan.errors import InputError, from_validation_error
from vramplan.sources.config_fields import read_bool, read_count, read_name, read_number, read_strings, shown
from vramplan.specs.bounds import MODEL_BOUNDS
from vramplan.specs.model import ModelSpec

# model_type -> (architecture, tie_word_embeddings default in transformers' config class)
_KNOWN = {
    "llama": ("llama", False),
    "mistral": ("mistral", False),
    "mixtral": ("mixtral", False),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
    "gemma2": ("gemma2", True),
    "gemma3_text": ("gemma3", True),
    "gemma": ("llama", True),  # Gemma 1: llama-shaped layers (GeGLU has the same Linear shapes)
    "phi3": ("phi3", False),
}
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_OPTIONAL_COUNTS = ("num_key_value_heads", "head_dim", "max_position_embeddings", "num_local_experts",
                    "num_experts_per_tok", "sliding_window")


# Fields whose memory effect the planner does not model, by what it assumes instead.
_MLA_FIELDS = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
_MOE_FIELDS = ("num_experts", "n_routed_experts", "moe_intermediate_size", "n_shared_experts")
# Windows modelled: Gemma's alternating local/global layers, Mistral's window on every layer
_WINDOWED = ("gemma2", "gemma3_text", "mistral")
_QK_NORMED = ("qwen3", "gemma3_text")
_KNOWN_ROPE = ("default", "linear", "dynamic", "llama3", "yarn", "longrope", "su", "proportional")
# What transformers' config class fills in when config.json omits a field (configuration_*.py,
# 5.24): the Hub's Gemma-3 4B/12B/27B text_config leaves out vocab_size, heads and context.
_CLASS_DEFAULTS = {
    "gemma3_text": dict(vocab_size=262_208, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                        max_position_embeddings=131_072, sliding_window=4096),
    "gemma2": dict(head_dim=256, sliding_window=4096),
    "qwen3": dict(head_dim=128),
}
_NESTED_TYPE = {"gemma3": "gemma3_text"}  # multimodal model_type -> its text_config's


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
        model_type = read_name(nested, "model_type", where) or _NESTED_TYPE.get(top_type, "")
        text = {**nested, "model_type": model_type, "quantization_config": cfg.get("quantization_config")}
        return text, top_type, where
    return cfg, "", where


def _window_pattern(cfg: dict[str, Any], model_type: str, where: str) -> int:
    """Every Nth layer global: from `layer_types` when the config lists them, else transformers'
    defaults (Gemma2Config: every 2nd, Gemma3TextConfig: `sliding_window_pattern`, 6)."""
    types = read_strings(cfg, "layer_types", where)
    if types and "full_attention" in types:
        return types.index("full_attention") + 1
    if model_type == "gemma2":
        return 2
    return read_count(cfg, "sliding_window_pattern", where, 1, MODEL_BOUNDS["sliding_window_pattern"][1], 6)


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


def assumption_notes(cfg: dict[str, Any], model_type: str, head_dim: int, multimodal_type: str = "") -> list[str]:
    """What the plan assumes for fields of `cfg` it does not model (MLA, MoE, windows, q/k norms,
    head_dim), one sentence each; [] for a config the planner models fully. Untrusted values are
    quoted with `shown` (short, one line)."""
    notes = []
    label = f"model_type '{model_type or '?'}'"
    if model_type not in _KNOWN:
        notes.append(f"{label} is not modelled: planned as llama-shaped layers (q/k/v/o projections, "
                     "gated MLP, 2 RMSNorms per layer)")
    if any(cfg.get(field) for field in _MLA_FIELDS):
        notes.append(f"{label}: latent attention (MLA: kv_lora_rank, ...) is not modelled: planned as "
                     f"standard attention with {cfg.get('num_key_value_heads') or cfg['num_attention_heads']} "
                     "KV heads, so weights and KV cache may be overstated")
    if model_type != "mixtral" and any(cfg.get(field) for field in _MOE_FIELDS):
        notes.append(f"{label}: mixture-of-experts fields ({', '.join(f for f in _MOE_FIELDS if cfg.get(f))}) "
                     "are not modelled: planned as one dense MLP of intermediate_size")
    window = cfg.get("sliding_window")
    if window and model_type not in _WINDOWED and cfg.get("use_sliding_window") is not False:
        notes.append(f"{label}: sliding_window {window} is not modelled: KV cache and attention "
                     "planned over every token in every layer")
    if model_type not in _QK_NORMED and (cfg.get("qk_layernorm") or cfg.get("use_qk_norm")):
        notes.append(f"{label}: q/k normalization is not modelled (its weights and saved activations "
                     "are missing from the plan)")
    if model_type in ("llama", "mistral", "mixtral") or model_type not in _KNOWN:
        if head_dim and head_dim * cfg["num_attention_heads"] != cfg["hidden_size"]:
            notes.append(f"head_dim {head_dim} is not hidden_size / num_attention_heads "
                         f"({cfg['hidden_size']} / {cfg['num_attention_heads']}): q/o projections and "
                         f"KV cache planned with head_dim {head_dim}")
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    rope_type = (rope.get("rope_type") or rope.get("type") or "") if isinstance(rope, dict) else ""
    rope_type = rope_type if isinstance(rope_type, str) else shown(rope_type)
    if rope_type and rope_type not in _KNOWN_ROPE:
        notes.append(f"rope_type {shown(rope_type)} is not known: planned as standard RoPE (cos/sin tables only)")
    if cfg.get("attn_logit_softcapping") and model_type != "gemma2":
        notes.append(f"{label}: attn_logit_softcapping is modelled for Gemma-2 only: planned with the "
                     "attention implementation asked for (transformers may need eager, which saves s^2 scores)")
    if cfg.get("attention_chunk_size"):
        notes.append(f"{label}: chunked attention (attention_chunk_size {shown(cfg['attention_chunk_size'])}) is not "
                     "modelled: KV cache planned over every token")
    if multimodal_type:
        notes.append(f"'{multimodal_type}' is multimodal: planned is its text decoder (text_config); "
                     "the vision tower and image tokens are not")
    return notes


def spec_from_config(cfg: Any, name: str = "", origin: str = "config.json") -> ModelSpec:
    """A ModelSpec from a config.json dict; unknown llama-like model types read as llama.

    Every field read is checked for its JSON type and for ModelSpec's bounds (config_fields):
    a wrong type or an out-of-range count is an InputError, never coerced."""
    if not isinstance(cfg, dict):
        raise InputError(origin, "must be a JSON object")
    cfg, multimodal_type, where = _text_config(cfg, origin)
    model_type = read_name(cfg, "model_type", where)
    defaults = _CLASS_DEFAULTS.get(model_type, {})
    cfg = {**cfg, **{field: value for field, value in defaults.items() if cfg.get(field) is None}}
    missing = [field for field in _REQUIRED if cfg.get(field) is None]
    if missing:
        raise InputError(origin, f"missing '{missing[0]}' (model_type '{model_type or '?'}')")
    cfg = _checked(cfg, where)
    source = f"config.json: {origin}"
    if model_type in _KNOWN:
        architecture, tied_default = _KNOWN[model_type]
        if model_type == "gemma":
            source += " (gemma read as llama-shaped)"
    else:
        architecture, tied_default = "llama", False
        source += f" (model_type '{model_type or '?'}' read as llama)"
    fields: dict[str, Any] = {field: cfg[field] for field in _REQUIRED}
    tied = cfg["tie_word_embeddings"]
    fields.update(
        architecture=architecture,
        num_key_value_heads=cfg["num_key_value_heads"] or 0,
        head_dim=cfg["head_dim"] or 0,
        tie_word_embeddings=tied_default if tied is None else tied,
        attention_bias=model_type == "qwen2" or bool(cfg["attention_bias"]),
        # transformers' own default when a config leaves it out; an explicit value is checked
        max_position_embeddings=cfg["max_position_embeddings"] or 4096,
        notes=tuple(assumption_notes(cfg, model_type, cfg["head_dim"] or 0, multimodal_type)),
    )
    if model_type == "mixtral" or cfg["num_local_experts"]:
        fields["num_local_experts"] = cfg["num_local_experts"] or 1
        fields["num_experts_per_tok"] = cfg["num_experts_per_tok"] or 1
    if model_type == "phi3":
        fields.update(fused_qkv=True, fused_gate_up=True)
    if model_type in ("gemma2", "gemma3_text"):
        fields.update(norms_per_layer=4, final_logit_softcapping=cfg["final_logit_softcapping"] is not None)
    if model_type in _WINDOWED and cfg["sliding_window"]:
        pattern = 0 if model_type == "mistral" else _window_pattern(cfg, model_type, where)
        fields.update(sliding_window=cfg["sliding_window"], sliding_window_pattern=pattern)
    if model_type in _QK_NORMED:
        fields["qk_norm"] = True
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
