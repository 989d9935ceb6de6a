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
    per_layer += 2 * spec.head_dim if spec.qk_norm else 0  # q_norm and k_norm, head_dim each
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
    assert len(models) == 68
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


# ---------------------------------------------------------------- pasted names, variants, new families

@pytest.mark.parametrize("pasted, key", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3-instruct"),
    ("google/gemma-2-9b-it", "gemma-2-9b-it"),
    ("META-LLAMA/llama-3.1-8b-instruct", "llama-3.1-8b-instruct"),
    ("Qwen/Qwen3-8B", "qwen3-8b"),
    ("qwen/qwen3-8b-base", "qwen3-8b-base"),
    ("google/gemma-3-27b-it", "gemma-3-27b-it"),
    ("microsoft/phi-4", "phi-4"),
    ("mistralai/Mistral-Nemo-Instruct-2407", "mistral-nemo-12b-instruct"),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b-instruct"),
])
def test_pasted_hf_repo_ids_resolve_case_insensitively(pasted, key):
    assert get_model(pasted).name == key


@pytest.mark.parametrize("base, variant, hf_id", [
    ("llama-3.1-8b", "llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("llama-2-7b", "llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf"),
    ("mistral-7b-v0.3", "mistral-7b-instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("gemma-2-9b", "gemma-2-9b-it", "google/gemma-2-9b-it"),
    ("qwen2.5-7b", "qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("tinyllama-1.1b", "tinyllama-1.1b-chat", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
])
def test_instruct_variants_are_distinct_models_with_their_own_hf_id(base, variant, hf_id):
    base_spec, variant_spec = get_model(base), get_model(variant)
    assert variant_spec.hf_id == hf_id and base_spec.hf_id != hf_id
    assert variant_spec.name != base_spec.name
    ignored = {"name", "hf_id"}
    assert ({k: v for k, v in variant_spec.model_dump().items() if k not in ignored}
            == {k: v for k, v in base_spec.model_dump().items() if k not in ignored})


def test_emit_hf_loads_the_instruct_repository_a_user_pasted():
    from vramplan.emit_hf import hf_snippet
    from vramplan.estimate import estimate, make_run
    from vramplan.gpus import get_gpu

    model, gpu, run = get_model("meta-llama/Llama-3.1-8B-Instruct"), get_gpu("a100"), make_run()
    snippet = hf_snippet(model, gpu, run, estimate(model, gpu))
    assert '"meta-llama/Llama-3.1-8B-Instruct"' in snippet and '"meta-llama/Llama-3.1-8B"' not in snippet


# Published totals. Qwen3: keras-hub keras_hub/src/models/qwen3/qwen3_presets.py (equal to
# sum(p.numel()) of the HF models). Gemma-3: keras-hub gemma3_presets.py *_text presets (the text
# decoder; keras' vocabulary is 262144 rows, HF's 4B/12B/27B text_config 262208, hence "within").
# Llama-3.3-70B: its model card's 70B = Llama-3.1-70B's 70,553,706,496. Phi-4: 14.7B on its model
# card. Mistral-Nemo: 12.2B on its model card (safetensors total).
@pytest.mark.parametrize("name, published", [
    ("qwen3-0.6b", 596_049_920), ("qwen3-1.7b", 1_720_574_976), ("qwen3-4b", 4_022_468_096),
    ("qwen3-8b", 8_190_735_360), ("qwen3-14b", 14_768_307_200), ("qwen3-32b", 32_762_123_264),
    ("gemma-3-1b", 999_885_952), ("gemma-3-4b", 3_880_099_328), ("gemma-3-12b", 11_765_788_416),
    ("gemma-3-27b", 27_009_002_240),
    ("llama-3.3-70b-instruct", 70_553_706_496), ("phi-4", 14.7e9), ("mistral-nemo-12b", 12.2e9),
])
def test_new_families_parameter_counts_match_published_totals(name, published):
    from vramplan.memory.parameters import parameter_count as planner_count

    spec = get_model(name)
    assert abs(planner_count(spec) - published) <= 0.005 * published
    assert planner_count(spec) == parameter_count(spec)


def test_qwen3_and_gemma3_counts_are_exact_with_their_qk_norms():
    """q_norm and k_norm (head_dim each, per layer) are what separates the planner from the
    published totals: 28 x 256 parameters for Qwen3-0.6B, 26 x 512 for Gemma-3-1B."""
    from vramplan.memory.parameters import parameter_count as planner_count

    assert planner_count(get_model("qwen3-0.6b")) == 596_049_920
    assert planner_count(get_model("gemma-3-1b")) == 999_885_952


def test_new_family_architectures_follow_their_configs():
    qwen3 = get_model("qwen3-4b")
    assert qwen3.qk_norm and qwen3.head_dim == 128 and qwen3.q_dim != qwen3.hidden_size
    assert qwen3.tie_word_embeddings and not get_model("qwen3-8b").tie_word_embeddings
    assert not qwen3.attention_bias
    gemma3 = get_model("gemma-3-12b")
    assert gemma3.qk_norm and gemma3.norms_per_layer == 4 and not gemma3.final_logit_softcapping
    assert gemma3.sliding_window == 1024 and gemma3.sliding_window_layers == 40  # 48 layers, 5:1
    assert get_model("gemma-3-1b").sliding_window == 512
    assert any("text decoder" in note for note in gemma3.notes)
    nemo = get_model("mistral-nemo-12b")
    assert nemo.head_dim == 128 and nemo.hidden_size // nemo.num_attention_heads == 160
    phi4 = get_model("phi-4")
    assert phi4.fused_qkv and phi4.num_key_value_heads == 10


def test_a_variant_that_is_not_an_hf_id_is_rejected(monkeypatch):
    import vramplan.catalog as catalog

    tables = {"m": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "vocab_size": 100, "variants": {"instruct": 3}}}
    with pytest.raises(InputError, match=r"\[m\]\.variants\.instruct"):
        catalog._expand_variants(tables)
