"""The bundled model catalog: every entry validates, parameter counts match the published
ones, and names resolve (aliases, HF ids, did-you-mean, ambiguity)."""
from __future__ import annotations

import pytest

from vramplan.catalog import get_model, list_models, model_aliases
from vramplan.errors import InputError
from vramplan.specs.model import ModelSpec


def parameter_count(spec: ModelSpec) -> int:
    """Linear weights (+ biases) per layer, norms, embeddings (+ untied lm_head), final norm."""
    per_layer = sum(
        (lin.in_features * lin.out_features + (lin.out_features if lin.bias else 0)) * lin.count
        for lin in spec.layer_linears()
    )
    per_layer += spec.norms_per_layer * spec.hidden_size
    embeddings = spec.vocab_size * spec.hidden_size * (1 if spec.tie_word_embeddings else 2)
    return spec.num_hidden_layers * per_layer + embeddings + spec.hidden_size


@pytest.mark.parametrize(
    "name, expected",
    [
        ("llama-2-7b", 6_738_415_616),
        ("llama-2-13b", 13_015_864_320),
        ("llama-2-70b", 68_976_648_192),
        ("llama-3.1-8b", 8_030_261_248),
        ("llama-3.2-1b", 1_235_814_400),
        ("llama-3.2-3b", 3_212_749_824),
        ("mistral-7b-v0.1", 7_241_732_096),
        ("mistral-7b-v0.3", 7_248_023_552),
        ("mixtral-8x7b", 46_702_792_704),
        ("qwen2.5-0.5b", 494_032_768),
        ("qwen2.5-7b", 7_615_616_512),
        ("gemma-2-2b", 2_614_341_888),
        ("gemma-2-9b", 9_241_705_984),
        ("gemma-2-27b", 27_227_128_320),
        ("phi-3-mini-4k", 3_821_079_552),
        ("tinyllama-1.1b", 1_100_048_384),
    ],
)
def test_catalog_parameter_counts_match_published(name, expected):
    assert parameter_count(get_model(name)) == expected


def test_every_catalog_model_validates_and_has_an_hf_id():
    models = list_models()
    assert len(models) == 23
    for spec in models:
        assert isinstance(spec, ModelSpec)
        assert spec.hf_id and "/" in spec.hf_id
        assert spec.q_dim % spec.kv_dim == 0
        assert 0.3e9 < parameter_count(spec) < 80e9


def test_architecture_flags_follow_the_configs():
    assert get_model("qwen2.5-7b").attention_bias
    assert not get_model("llama-3.1-8b").attention_bias
    gemma = get_model("gemma-2-9b")
    assert gemma.norms_per_layer == 4 and gemma.final_logit_softcapping and gemma.head_dim == 256
    phi = get_model("phi3-mini")
    assert phi.fused_qkv and phi.fused_gate_up
    assert [lin.name for lin in phi.layer_linears()] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    mixtral = get_model("mixtral")
    assert mixtral.num_local_experts == 8 and mixtral.num_experts_per_tok == 2
    assert get_model("mistral-7b-v0.1").vocab_size == 32000
    assert get_model("mistral-7b-v0.3").vocab_size == 32768


@pytest.mark.parametrize(
    "alias, key",
    [
        ("7b", "llama-2-7b"), ("13B", "llama-2-13b"), ("70b", "llama-2-70b"),
        ("8b", "llama-3.1-8b"), ("1b", "llama-3.2-1b"), ("3b", "llama-3.2-3b"),
        ("llama2-7b", "llama-2-7b"), ("Llama-3.1-8B", "llama-3.1-8b"), ("llama_3_1_8b", "llama-3.1-8b"),
        ("mistral-7b", "mistral-7b-v0.1"), ("mixtral-8x7b", "mixtral-8x7b"),
        ("qwen2.5-7b", "qwen2.5-7b"), ("QWEN2.5-1.5B", "qwen2.5-1.5b"), ("gemma2-9b", "gemma-2-9b"),
        ("phi3-mini", "phi-3-mini-4k"), ("tinyllama", "tinyllama-1.1b"),
        ("meta-llama/Llama-2-7b-hf", "llama-2-7b"), ("META-LLAMA/LLAMA-2-7B-HF", "llama-2-7b"),
        ("Llama-2-7b-hf", "llama-2-7b"), ("Qwen/Qwen2.5-72B", "qwen2.5-72b"),
        ("google/gemma-2-27b", "gemma-2-27b"), ("mistralai/Mistral-7B-v0.3", "mistral-7b-v0.3"),
    ],
)
def test_aliases_and_hf_ids_resolve_case_insensitively(alias, key):
    assert get_model(alias).name == key


def test_model_aliases_lists_every_model_with_its_hf_id():
    aliases = model_aliases()
    assert set(aliases) == {m.name for m in list_models()}
    assert "meta-llama/Llama-2-7b-hf" in aliases["llama-2-7b"]
    assert "7b" in aliases["llama-2-7b"]


def test_unknown_model_suggests_close_names_in_one_line():
    with pytest.raises(InputError) as info:
        get_model("lama-2-7b")
    message = str(info.value)
    assert info.value.field == "model"
    assert "unknown model 'lama-2-7b'; did you mean: llama-2-7b" in message
    assert "vramplan models lists all" in message and "\n" not in message


def test_unknown_model_with_nothing_close_still_points_to_the_list():
    with pytest.raises(InputError, match=r"unknown model 'zzzz' \(vramplan models lists all\)"):
        get_model("zzzz")


@pytest.mark.parametrize("name", ["llama-2", "qwen2.5", "gemma-2"])
def test_ambiguous_prefix_lists_candidates(name):
    with pytest.raises(InputError, match="ambiguous model") as info:
        get_model(name)
    assert "\n" not in str(info.value)
