"""MoE expert layouts: transformers >= 5 fused 3-D experts (default) vs 4.x one nn.Linear per expert.

Facts checked in transformers 5.24 / peft 0.21.2 / bitsandbytes 0.50.2: bitsandbytes replaces only
`type(module) is nn.Linear` (integrations/bitsandbytes.py), so `MixtralExperts.gate_up_proj`
[E, 2i, h], `down_proj` [E, h, i] and the router weight (`MixtralTopKRouter`, not an nn.Linear) stay
in the load dtype, and `prepare_model_for_kbit_training` casts them to fp32.
"""
from __future__ import annotations

import json

import pytest

from vramplan.catalog import get_model
from vramplan.cli.main import main
from vramplan.errors import InputError
from vramplan.estimate import estimate, make_run
from vramplan.gpus import get_gpu
from vramplan.memory import lora, parameters
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.plan import phase_components
from vramplan.memory.xp import allocation_bytes

MIXTRAL = get_model("mixtral-8x7b")
E, H, I, L = (MIXTRAL.num_local_experts, MIXTRAL.hidden_size, MIXTRAL.intermediate_size,
              MIXTRAL.num_hidden_layers)


def _static(**fields):
    phases = phase_components(MIXTRAL, get_gpu("h200"), make_run(**fields))
    return phases["optimizer"]


def test_fused_experts_stay_fp32_after_kbit_prep_under_qlora():
    fused, linear = _static(), _static(moe_experts="linear")
    per_layer = (allocation_bytes(E * 2 * I * H * 4) + allocation_bytes(E * H * I * 4)  # gate_up_proj, down_proj
                 + allocation_bytes(E * H * 4))  # router weight
    assert fused["float_weights"] - linear["float_weights"] == L * per_layer
    assert fused["float_weights"] > 45e9 * 4  # ~45B of Mixtral's 46.7B parameters, in fp32


def test_linear_layout_quantizes_every_expert_to_nf4():
    fused, linear = _static(), _static(moe_experts="linear")
    packed_per_layer = 3 * E * allocation_bytes(I * H // 2) + allocation_bytes(E * H // 2)  # w1, w3, w2 + gate
    assert linear["quantized_weights"] - fused["quantized_weights"] == L * packed_per_layer


def test_total_parameters_do_not_depend_on_the_layout():
    counts = {layout: parameters.count_elements(parameters.all_parameter_groups(MIXTRAL, layout))
              for layout in ("fused", "linear")}
    assert counts["fused"] == counts["linear"] == parameters.parameter_count(MIXTRAL)


def test_lora_all_linear_under_fused_reaches_the_attention_projections_only():
    rank = 16
    attention = (H + MIXTRAL.q_dim) * 2 + (H + MIXTRAL.kv_dim) * 2  # q, o; k, v
    assert lora.lora_parameter_count(MIXTRAL, ("all-linear",), rank, "fused") == L * rank * attention
    assert estimate(MIXTRAL, "h200").trainable_parameters == L * rank * attention
    linear = lora.lora_parameter_count(MIXTRAL, ("all-linear",), rank, "linear")
    assert linear == L * rank * (attention + (H + E) + 3 * E * (H + I))


@pytest.mark.parametrize("targets", [("w1", "w3"), ("w2",), ("gate",)])
def test_expert_target_names_under_fused_ask_for_the_linear_layout(targets):
    with pytest.raises(InputError) as error:
        estimate(MIXTRAL, "h200", lora_targets=targets)
    assert error.value.field == "lora_targets" and "--moe-experts linear" in error.value.message
    assert estimate(MIXTRAL, "h200", lora_targets=targets, moe_experts="linear").trainable_parameters > 0


def test_full_finetuning_trains_the_fused_experts():
    fused, linear = _static(method="full"), _static(method="full", moe_experts="linear")
    assert fused["gradients"] == fused["float_weights"]
    assert abs(fused["optimizer_state"] - linear["optimizer_state"]) < 0.001 * linear["optimizer_state"]


def test_gguf_and_gptq_quantize_the_experts_in_their_own_runtimes():
    gpu = get_gpu("h200")
    for fields in (dict(method="inference", weight_format="gguf-q4_k_m"), dict(weight_format="gptq-4bit")):
        run = make_run(**fields)
        assert resolve_dtypes(run, gpu, MIXTRAL).moe_experts == "linear"
        assert estimate(MIXTRAL, gpu, **fields).float_weights < 2 * 2**30


def test_fused_quantized_moe_gets_a_note_that_bitsandbytes_skips_the_experts():
    notes = " ".join(estimate(MIXTRAL, "mi300x").notes)  # fits there: a note, not the verdict's reason
    assert "does not quantize" in notes and "--moe-experts linear" in notes
    linear_notes = " ".join(estimate(MIXTRAL, "h200", moe_experts="linear").notes)
    assert "does not quantize" not in linear_notes and "4.x" in linear_notes
    assert not any("MoE" in note for note in estimate("llama-3.1-8b", "h200").notes)


def test_moe_experts_flag_switches_the_layout(capsys):
    main(["fit", "--model", "mixtral-8x7b", "--gpu", "h200", "--moe-experts", "linear", "--json"])
    linear = json.loads(capsys.readouterr().out)
    main(["fit", "--model", "mixtral-8x7b", "--gpu", "h200", "--json"])
    fused = json.loads(capsys.readouterr().out)
    assert linear["run"]["moe_experts"] == "linear" and fused["run"]["moe_experts"] == "fused"
    assert linear["fits"] is True and fused["fits"] is False
    assert fused["peak_allocated_bytes"] > 5 * linear["peak_allocated_bytes"]
