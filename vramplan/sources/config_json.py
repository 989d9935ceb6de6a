"""HF `config.json` (already parsed to a dict) -> ModelSpec, and its pre-quantized format."""
from __future__ import annotations

from typing import Any

from vramplan.errors import InputError, from_validation_error
from vramplan.specs.model import ModelSpec

# model_type -> (architecture, tie_word_embeddings default in transformers' config class)
_KNOWN = {
    "llama": ("llama", False),
    "mistral": ("mistral", False),
    "mixtral": ("mixtral", False),
    "qwen2": ("qwen2", False),
    "gemma2": ("gemma2", True),
    "gemma": ("llama", True),  # Gemma 1: llama-shaped layers (GeGLU has the same Linear shapes)
    "phi3": ("phi3", False),
}
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language-model part of a config; multimodal configs nest it under text_config."""
    nested = cfg.get("text_config")
    if isinstance(nested, dict) and "hidden_size" not in cfg:
        return {**nested, "quantization_config": cfg.get("quantization_config")}
    return cfg


def spec_from_config(cfg: Any, name: str = "", origin: str = "config.json") -> ModelSpec:
    """A ModelSpec from a config.json dict; unknown llama-like model types read as llama."""
    if not isinstance(cfg, dict):
        raise InputError(origin, "must be a JSON object")
    cfg = _text_config(cfg)
    model_type = str(cfg.get("model_type") or "")
    missing = [field for field in _REQUIRED if cfg.get(field) is None]
    if missing:
        raise InputError(origin, f"missing '{missing[0]}' (model_type '{model_type or '?'}')")
    source = f"config.json: {origin}"
    if model_type in _KNOWN:
        architecture, tied_default = _KNOWN[model_type]
        if model_type == "gemma":
            source += " (gemma read as llama-shaped)"
    else:
        architecture, tied_default = "llama", False
        source += f" (model_type '{model_type or '?'}' read as llama)"
    fields: dict[str, Any] = {field: cfg[field] for field in _REQUIRED}
    fields.update(
        architecture=architecture,
        num_key_value_heads=cfg.get("num_key_value_heads") or 0,
        head_dim=cfg.get("head_dim") or 0,
        tie_word_embeddings=cfg.get("tie_word_embeddings", tied_default),
        attention_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
        max_position_embeddings=cfg.get("max_position_embeddings") or 4096,
    )
    if model_type == "mixtral" or cfg.get("num_local_experts"):
        fields["num_local_experts"] = cfg.get("num_local_experts") or 1
        fields["num_experts_per_tok"] = cfg.get("num_experts_per_tok") or 1
    if model_type == "phi3":
        fields.update(fused_qkv=True, fused_gate_up=True)
    if model_type == "gemma2":
        fields.update(norms_per_layer=4, final_logit_softcapping=cfg.get("final_logit_softcapping") is not None)
    try:
        return ModelSpec(name=name or str(cfg.get("_name_or_path") or model_type or "model"),
                         source=source, **fields)
    except Exception as exc:  # pydantic.ValidationError
        raise from_validation_error(exc, prefix=f"{origin}: ") from None


def weight_format_from_config(cfg: Any) -> str | None:
    """'nf4', 'fp4', 'int8', 'gptq-4bit', 'gptq-8bit' or 'awq-4bit' from quantization_config."""
    if not isinstance(cfg, dict):
        return None
    qc = _text_config(cfg).get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method == "bitsandbytes" or "load_in_4bit" in qc or "load_in_8bit" in qc:
        if qc.get("load_in_4bit"):
            return "fp4" if str(qc.get("bnb_4bit_quant_type", "fp4")).lower() == "fp4" else "nf4"
        if qc.get("load_in_8bit"):
            return "int8"
        return None
    if method == "gptq":
        return f"gptq-{qc.get('bits', 4)}bit" if qc.get("bits", 4) in (4, 8) else None
    if method == "awq":
        return "awq-4bit" if qc.get("bits", 4) == 4 else None
    return None
