"""config.json fields are read in their own JSON type and within ModelSpec's bounds: a wrong type
or an out-of-range count is a one-line InputError naming the field, never a coerced value."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan.catalog import list_models
from vramplan.errors import InputError
from vramplan.sources.config_json import spec_from_config, weight_format_from_config
from vramplan.sources.local import load_local
from vramplan.specs.bounds import MODEL_BOUNDS

LLAMA_2_7B = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False,
}
GEMMA2_9B = {  # google/gemma-2-9b config.json (the fields the planner reads)
    "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
    "max_position_embeddings": 8192, "sliding_window": 4096, "final_logit_softcapping": 30.0,
    "attention_bias": False,
}
GEMMA3_1B = {  # google/gemma-3-1b-pt config.json: local/global layers from sliding_window_pattern
    "model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
    "max_position_embeddings": 32768, "sliding_window": 512, "sliding_window_pattern": 6,
}
COUNTS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
          "num_key_value_heads", "head_dim", "max_position_embeddings", "num_local_experts",
          "num_experts_per_tok", "sliding_window")
BOOLS = ("attention_bias", "tie_word_embeddings")


def _low(field: str) -> int:
    return 0 if field == "sliding_window" else max(MODEL_BOUNDS[field][0], 1)


@pytest.mark.parametrize("field, value, message", [
    ("attention_bias", "false", "must be true or false (got 'false')"),
    ("tie_word_embeddings", 1, "must be true or false (got 1)"),
    ("max_position_embeddings", 0, "must be an integer from 1 to 16777216 (got 0)"),
    ("hidden_size", 10**12, "must be an integer from 1 to 131072 (got 1000000000000)"),
    ("num_hidden_layers", True, "must be an integer from 1 to 4096 (got true)"),
    ("num_hidden_layers", 32.5, "(got 32.5)"),
    ("vocab_size", "32000", "(got '32000')"),
    ("num_attention_heads", [32], "(got a list)"),
    ("num_key_value_heads", 0, "must be an integer from 1 to 4096"),
    pytest.param("intermediate_size", 10**5000, "(got an integer of 16610 bits)", id="5000-digit"),
    ("head_dim", float("inf"), "(got inf)"),
    ("sliding_window", "4096", "(got '4096')"),
])
def test_config_field_of_the_wrong_type_or_range_is_an_error_naming_it(field, value, message):
    with pytest.raises(InputError, match=None) as info:
        spec_from_config({**LLAMA_2_7B, field: value}, origin="m/config.json")
    assert info.value.field == f"m/config.json: {field}"
    assert message in info.value.message and "\n" not in str(info.value)


def test_integral_float_and_null_read_as_json_means_them():
    spec = spec_from_config({**LLAMA_2_7B, "hidden_size": 4096.0, "head_dim": None, "attention_bias": None})
    assert (spec.hidden_size, spec.head_dim, spec.attention_bias) == (4096, 128, False)
    assert spec_from_config({**LLAMA_2_7B, "tie_word_embeddings": True}).tie_word_embeddings is True


def test_gemma_window_pattern_and_layer_types_are_checked():
    with pytest.raises(InputError, match="sliding_window_pattern: must be an integer from 1"):
        spec_from_config({**GEMMA2_9B, "model_type": "gemma3_text", "sliding_window_pattern": 0})
    with pytest.raises(InputError, match="layer_types: must be a list of strings"):
        spec_from_config({**GEMMA2_9B, "layer_types": "full_attention"})
    with pytest.raises(InputError, match="final_logit_softcapping: must be a finite number"):
        spec_from_config({**GEMMA2_9B, "final_logit_softcapping": "30"})


def test_nested_text_config_errors_name_the_nested_field():
    cfg = {"model_type": "llava", "text_config": {**LLAMA_2_7B, "attention_bias": "no"}}
    with pytest.raises(InputError) as info:
        spec_from_config(cfg)
    assert info.value.field == "config.json: text_config.attention_bias"
    with pytest.raises(InputError, match="text_config: must be a JSON object"):
        spec_from_config({"model_type": "llava", "text_config": [1]})


def test_model_type_must_be_a_short_printable_string():
    with pytest.raises(InputError, match="model_type: must be a printable string"):
        spec_from_config({**LLAMA_2_7B, "model_type": "llama\nFITS"})
    with pytest.raises(InputError, match="model_type"):
        spec_from_config({**LLAMA_2_7B, "model_type": ["llama"]})


@pytest.mark.parametrize("quantization_config, message", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": "false"}, "load_in_4bit: must be true or false"),
    ({"quant_method": "gptq", "bits": "4"}, "bits: must be an integer from 1 to 64"),
    ({"quant_method": 4}, "quant_method: must be a printable string"),
    ("nf4", "quantization_config: must be a JSON object"),
])
def test_quantization_config_flags_are_read_strictly(quantization_config, message):
    with pytest.raises(InputError, match=message):
        weight_format_from_config({**LLAMA_2_7B, "quantization_config": quantization_config})


def test_bounds_admit_every_published_size_and_refuse_one_past():
    """Llama-4-Scout's 10485760-token context and Gemma-3's 262208 vocab plan; one past a bound is refused."""
    spec = spec_from_config({**LLAMA_2_7B, "max_position_embeddings": 10_485_760, "vocab_size": 262_208})
    assert spec.max_position_embeddings == 10_485_760
    for field in ("hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings"):
        high = MODEL_BOUNDS[field][1]
        with pytest.raises(InputError, match=f"{field}: must be an integer from 1 to {high}"):
            spec_from_config({**LLAMA_2_7B, field: high + 1})


def test_sizes_each_in_bounds_but_too_many_parameters_together_are_refused():
    with pytest.raises(InputError, match=r"parameters; at most 2\*\*44"):
        spec_from_config({**LLAMA_2_7B, "hidden_size": 1 << 17, "intermediate_size": 1 << 20,
                          "num_hidden_layers": 1 << 12, "num_attention_heads": 128, "num_key_value_heads": 8})


def test_every_catalog_model_is_within_the_bounds():
    models = list_models()
    assert len(models) > 50
    for spec in models:
        for field, (low, high) in MODEL_BOUNDS.items():
            assert low <= getattr(spec, field) <= high, (spec.name, field)


def test_model_folder_with_a_string_bool_is_refused_not_planned(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_2_7B, "attention_bias": "false"}))
    with pytest.raises(InputError, match="attention_bias: must be true or false"):
        load_local(tmp_path)


# ---------------------------------------------------------------- property: only InputError, no coercion

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
JSON_COUNTS = JSON | st.integers(min_value=-2, max_value=1 << 25) | st.sampled_from([0, 1, 2, 4096, 4096.0, 8.5])


def _valid_count(field: str, value) -> bool:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and _low(field) <= value <= MODEL_BOUNDS[field][1]


@settings(max_examples=400, deadline=None)
@given(base=st.sampled_from([LLAMA_2_7B, GEMMA2_9B, GEMMA3_1B]), field=st.sampled_from(COUNTS + BOOLS), value=JSON_COUNTS)
def test_a_config_field_is_read_as_given_or_refused(base, field, value):
    """Law: with one field set to any JSON value, the reader raises InputError (only that) or the
    value was valid for the field; a bool that plans is the bool given."""
    try:
        spec = spec_from_config({**base, field: value})
    except InputError:
        spec = None  # refused: the law's first outcome
    if spec is not None:
        assert _read_as_given(spec, base, field, value), (field, value)


def _read_as_given(spec, base: dict, field: str, value) -> bool:
    """JSON null reads as the field left out; a bool as itself; a count only when valid for the field."""
    if value is None:
        absent = {key: item for key, item in base.items() if key != field}
        return getattr(spec, field) == getattr(spec_from_config(absent), field)
    if field in BOOLS:
        return isinstance(value, bool) and getattr(spec, field) is value
    return _valid_count(field, value)


@settings(max_examples=300, deadline=None)
@given(extra=st.dictionaries(st.sampled_from(COUNTS + BOOLS + (
    "model_type", "text_config", "layer_types", "sliding_window_pattern", "final_logit_softcapping",
    "rope_scaling", "attention_chunk_size", "quantization_config", "_name_or_path", "kv_lora_rank")), JSON, max_size=5),
    base=st.sampled_from([LLAMA_2_7B, GEMMA2_9B, GEMMA3_1B, {}]))
def test_any_json_in_any_config_field_raises_only_input_error(extra, base):
    cfg = {**base, **extra}
    for read in (spec_from_config, weight_format_from_config):
        try:
            read(cfg)
        except InputError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(cfg=JSON)
def test_any_json_document_as_a_config_raises_only_input_error(cfg):
    try:
        spec_from_config(cfg)
    except InputError:
        pass
