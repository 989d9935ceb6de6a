"""The simulator and the validation harness build the same Hugging Face model: one config, one
set of LoRA targets, one k-bit preparation, one phase mapping (vramplan/simulate/hf_build.py, vramplan/phases.py)."""
from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import validation.build as harness_build  # noqa: E402
import validation.cases as harness_cases  # noqa: E402
import validation.harness as harness  # noqa: E402
import validation.results as harness_results  # noqa: E402
from vramplan import phases
from vramplan.simulate import hf_build  # noqa: E402
from vramplan.catalog import list_models  # noqa: E402
from vramplan.estimate import make_run  # noqa: E402
from vramplan.gpus import get_gpu  # noqa: E402
from vramplan.memory.dtypes import resolve_dtypes  # noqa: E402
from vramplan.simulate import architecture, engine  # noqa: E402

GPU = get_gpu("h100-sxm")
ARCHITECTURES = sorted({m.architecture for m in list_models()})
DENSE = [next(m for m in list_models() if m.architecture == a and not m.is_moe) for a in ARCHITECTURES
         if any(m.architecture == a and not m.is_moe for m in list_models())]


@pytest.mark.parametrize("model", list_models(), ids=lambda m: m.name)
def test_simulator_and_harness_build_the_same_hf_config_for_every_catalog_model(model):
    simulated = architecture.hf_config(model).to_dict()
    if model.is_moe:
        with pytest.raises(harness_build.UnsupportedCase, match="MoE"):
            harness_build.hf_config(model)
        return
    assert harness_build.hf_config(model).to_dict() == simulated


def test_sliding_window_comes_from_the_spec_not_the_name():
    mistral = next(m for m in list_models() if m.name == "mistral-7b-v0.1")
    assert mistral.sliding_window == 4096
    assert harness_build.hf_config(mistral).sliding_window == 4096
    unwindowed = mistral.model_copy(update={"sliding_window": 0})  # "v0.1" still in the name
    assert harness_build.hf_config(unwindowed).sliding_window is None
    assert architecture.hf_config(unwindowed).sliding_window is None


@pytest.mark.parametrize("targets", [("all-linear",), ("o_proj",)])
@pytest.mark.parametrize("model", list_models(), ids=lambda m: m.name)
def test_lora_targets_are_the_planners_targeted_linears_for_every_catalog_model(model, targets):
    from vramplan.memory.lora import targeted_linears

    run = make_run(method="qlora", lora_targets=list(targets))
    dtypes = resolve_dtypes(run, GPU, model)
    names = tuple(hf_build.lora_target_names(model, run, dtypes))
    assert set(names) == {lin.name for lin in targeted_linears(model, run.lora_targets, dtypes.moe_experts)}
    assert engine.lora_target_names is harness_build.lora_target_names is hf_build.lora_target_names


def _tiny(model):
    """The catalog architecture at toy width: every switch of the config, none of the bytes."""
    heads = model.num_attention_heads // model.num_key_value_heads
    head_dim = 16
    update = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 128,
              "num_key_value_heads": 2, "num_attention_heads": 2 * heads, "head_dim": head_dim,
              "max_position_embeddings": 256}
    if model.architecture == "phi3":
        update["hidden_size"] = 2 * heads * head_dim
    return model.model_copy(update=update)


def _parameters(model):
    return {name: (param.dtype, param.requires_grad) for name, param in model.named_parameters()}


@pytest.mark.parametrize("kbit_prep", [True, False])
@pytest.mark.parametrize("catalog_model", DENSE, ids=lambda m: m.architecture)
def test_qlora_parameters_have_the_same_dtypes_and_trainability_in_simulator_and_harness(catalog_model, kbit_prep):
    spec = _tiny(catalog_model)
    run = make_run(method="qlora", kbit_prep=kbit_prep, gradient_checkpointing=False, attention="eager",
                   lora_targets=["all-linear"] if catalog_model.architecture != "llama" else ["q_proj", "down_proj"])
    dtypes = resolve_dtypes(run, GPU, spec)
    real = harness_build.build_model(spec, run, GPU, torch.device("cpu"))
    with FakeTensorMode():
        simulated = architecture.build_model(spec, spec.num_hidden_layers, run, dtypes)
        engine.prepare(simulated, spec, run, dtypes)
        simulated_parameters = _parameters(simulated)
    assert simulated_parameters == _parameters(real)


def test_phase_mapping_is_one_object_in_simulator_planner_cases_and_harness():
    simulate_compare = importlib.import_module("vramplan.simulate.compare")
    assert simulate_compare.ANALYTIC_PHASES is phases.ANALYTIC_PHASES_OF_SIMULATED
    assert harness_cases.PLANNER_PHASES is phases.ANALYTIC_PHASES_OF_MEASURED
    assert harness_results.PHASES[1:] == phases.MEASURED_STEP_PHASES
    assert harness.PhaseRecord.peak.__defaults__ == (phases.MEASURED_STEP_PHASES,)


def test_measured_and_simulated_phases_span_every_analytic_phase_once():
    from vramplan.memory.plan import phase_components

    analytic = set(phase_components(DENSE[0], GPU, make_run(method="lora")))
    analytic |= set(phase_components(DENSE[0], GPU, make_run(method="inference")))
    for grouping in (phases.ANALYTIC_PHASES_OF_SIMULATED, phases.ANALYTIC_PHASES_OF_MEASURED):
        spanned = [p for group in grouping.values() for p in group]
        assert sorted(spanned) == sorted(analytic)
