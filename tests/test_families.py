"""The architecture-family registry: every entry complete, the catalog agrees with it, and a family's
quirks reach the plan through it (a dummy family registered for the test)."""
import contextlib
import dataclasses
import importlib.util

import pytest

from vramplan import families
from vramplan.catalog import list_models
from vramplan.estimate import make_run, plan
from vramplan.families import Family, ModelType, get_family
from vramplan.gpus import get_gpu
from vramplan.memory import activations
from vramplan.memory.dtypes import DTYPE_BYTES, resolve_dtypes
from vramplan.sources.config_json import spec_from_config
from vramplan.specs import ModelSpec

GPU = get_gpu("h100-sxm")
CONFIG = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4, "num_attention_heads": 16,
          "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 4096}


@contextlib.contextmanager
def registered(**changes):
    """A family like llama but for `changes`, read from config.json model_type 'dummy', for the test only."""
    family = dataclasses.replace(get_family("llama"), name="dummy", title="Dummy",
                                 model_types={"dummy": ModelType(False)}, **changes)
    families.register(family)
    try:
        yield family
    finally:
        families.unregister("dummy")


@pytest.mark.parametrize("family", families.families(), ids=lambda f: f.name)
def test_every_family_entry_is_complete(family):
    assert family.title and family.model_types and family.config_class
    assert "transformers 5.24" in family.source and family.config_class.endswith("Config")
    assert set(family.hf_config_fields) <= families.HF_CONFIG_FIELDS
    assert family.norms_per_layer >= 1
    for model_type in family.model_types:
        assert families.family_of_model_type(model_type)[0] is family
    if family.alternating_windows:  # the reader needs a pattern when config.json has no layer_types
        assert family.default_window_pattern >= 2 and family.default_sliding_window
    if family.attn_logit_softcapping is not None:  # SDPA cannot soft-cap scores
        assert not family.supports_sdpa
    assert any(m.architecture == family.name for m in list_models()), "a family has catalog models"


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
@pytest.mark.parametrize("family", families.families(), ids=lambda f: f.name)
def test_every_family_names_a_transformers_config_class_with_its_defaults(family):
    import transformers

    config_class = getattr(transformers, family.config_class)
    defaults = config_class()
    for model_type, reading in family.model_types.items():
        if model_type == defaults.model_type:
            assert defaults.tie_word_embeddings == reading.tie_word_embeddings
    for field, value in family.class_defaults.items():
        assert getattr(defaults, field) == value, field


@pytest.mark.parametrize("model", list_models(), ids=lambda m: m.name)
def test_catalog_models_have_their_familys_switches(model):
    family = get_family(model.architecture)
    assert {name: getattr(model, name) for name in family.spec_defaults} == family.spec_defaults
    assert model.is_moe == family.moe
    if model.sliding_window:
        assert family.window_layout != "none"
        assert bool(model.sliding_window_pattern) == family.alternating_windows
    if family.qkv_bias:
        assert model.attention_bias


@pytest.mark.parametrize("family", families.families(), ids=lambda f: f.name)
def test_config_json_of_each_model_type_reads_as_its_family(family):
    for model_type in family.model_types:
        spec = spec_from_config({**CONFIG, "model_type": model_type, "head_dim": 64})
        assert spec.architecture == family.name
        assert {name: getattr(spec, name) for name in family.spec_defaults} == family.spec_defaults
        assert spec.tie_word_embeddings == family.model_types[model_type].tie_word_embeddings


def test_unknown_architecture_is_refused_with_the_known_ones():
    fields = spec_from_config({**CONFIG, "model_type": "llama"}).model_dump()
    with pytest.raises(ValueError, match="unknown architecture 'nope'; known: gemma2, gemma3, llama"):
        ModelSpec.model_validate({**fields, "architecture": "nope"})


def test_a_model_type_is_read_by_one_family_only():
    with pytest.raises(ValueError, match="already read by llama"):
        families.register(dataclasses.replace(get_family("mistral"), name="other",
                                              model_types={"llama": ModelType(False)}))
    assert "other" not in families.family_names()


def _saved(spec, run):
    return activations.saved_bytes_per_token(spec, run, resolve_dtypes(run, GPU, spec), run.seq_len)


def test_a_familys_norms_per_layer_change_activations_as_the_formula_says():
    """4 norms (pre and post around attention and MLP) save 2 x (4 h + 4) per token more than 2
    (fp32 input and rstd each, activations.saved_bytes_per_token), in every layer, for every token."""
    run = make_run(method="qlora", seq_len=512, micro_batch_size=2, gradient_checkpointing=False)
    llama = spec_from_config({**CONFIG, "model_type": "llama"})
    with registered(norms_per_layer=4):
        dummy = spec_from_config({**CONFIG, "model_type": "dummy"})
        assert dummy.architecture == "dummy" and dummy.norms_per_layer == 4
        one_norm = 4 * CONFIG["hidden_size"] + 4
        saved, base = _saved(dummy, run), _saved(llama, run)
        assert saved["attention_norm"] == 2 * base["attention_norm"] == 2 * one_norm
        assert saved["mlp_norm"] == 2 * base["mlp_norm"] == 2 * one_norm
        assert {k: v for k, v in saved.items() if "norm" not in k} == {k: v for k, v in base.items() if "norm" not in k}
        tokens = run.micro_batch_size * run.seq_len
        extra = plan(dummy, GPU, run).activations - plan(llama, GPU, run).activations
        assert extra == CONFIG["num_hidden_layers"] * tokens * 2 * one_norm


def test_a_family_without_sdpa_plans_eager_attention():
    run = make_run(method="qlora", seq_len=512, attention="sdpa")
    with registered(supports_sdpa=False):
        dummy = spec_from_config({**CONFIG, "model_type": "dummy"})
        assert activations.effective_attention(dummy, run) == "eager"
        eager = make_run(method="qlora", seq_len=512, attention="eager")
        assert _saved(dummy, run) == _saved(dummy, eager)
    llama = spec_from_config({**CONFIG, "model_type": "llama"})
    assert activations.effective_attention(llama, run) == "sdpa"


def test_alternating_windows_build_two_masks():
    with registered(window_layout="alternating", default_window_pattern=2, default_sliding_window=4096):
        dummy = spec_from_config({**CONFIG, "model_type": "dummy", "sliding_window": 256})
        assert dummy.sliding_window == 256 and dummy.sliding_window_pattern == 2
        assert activations.attention_mask_kinds(dummy) == 2
    assert activations.attention_mask_kinds(spec_from_config({**CONFIG, "model_type": "llama"})) == 1


def test_fp32_qk_norm_operand_saves_fp32_instead_of_the_compute_dtype():
    run = make_run(method="full", seq_len=256, compute_dtype="bf16")
    with registered(qk_norm=True):
        plain = spec_from_config({**CONFIG, "model_type": "dummy", "head_dim": 64})
        plain_bytes = activations.qk_norm_saved_per_token(plain, run, resolve_dtypes(run, GPU, plain))
    with registered(qk_norm=True, qk_norm_fp32_weight_operand=True):
        fp32 = spec_from_config({**CONFIG, "model_type": "dummy", "head_dim": 64})
        fp32_bytes = activations.qk_norm_saved_per_token(fp32, run, resolve_dtypes(run, GPU, fp32))
    assert fp32_bytes - plain_bytes == (4 - DTYPE_BYTES["bf16"]) * (fp32.q_dim + fp32.kv_dim)


def test_registering_checks_the_hf_config_fields():
    with pytest.raises(ValueError, match="hf_config_fields"):
        families.register(Family(name="bad", title="Bad", model_types={}, config_class="LlamaConfig",
                                 source="transformers 5.24", hf_config_fields=("rope_theta",)))
