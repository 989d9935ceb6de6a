"""Each version-keyed rule changes the plan by exactly the bytes its source formula gives."""
import pytest

from vramplan.estimate import estimate
from vramplan.gpus import get_gpu
from vramplan.memory.activations import dequant_temp_bytes, first_layer_unsaved_per_token
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.plan import phase_components, phase_terms
from vramplan.resolve import resolve_model
from vramplan.specs import RunConfig
from vramplan.stack.profile import resolve_stack
from vramplan.stack.rules import (bnb_4bit_keeps_matmul_inputs, causal_lm_loss_upcast, default_checkpoint_reentrant,
                                  trainer_default_optimizer)

MODEL = resolve_model("llama-3.1-8b")  # h 4096, q 4096, i 14336, 32 layers, V 128256
GPU = get_gpu("a10g")  # bf16 compute
H, Q, I, LAYERS, V = 4096, 4096, 14336, 32, 128256
B, S = 1, 2048


def phases(**fields):
    run = RunConfig(seq_len=S, micro_batch_size=B, **fields)
    return phase_components(MODEL, GPU, run)


@pytest.mark.parametrize("version, upcast", [("4.44", "model_forward"), ("4.45.2", "model_forward"),
                                             ("4.46", "loss_shifted_copy"), ("4.48.3", "loss_shifted_copy"),
                                             ("4.49", "loss"), ("5.24", "loss")])
def test_loss_upcast_rule_by_transformers_version(version, upcast):
    assert causal_lm_loss_upcast(resolve_stack(f"transformers={version}")["transformers"]) == upcast


def test_transformers_4_46_adds_one_shifted_fp32_copy_of_the_logits_to_the_loss_forward():
    # same checkpointing variant on both sides, so only the loss rule differs
    old = phases(stack="transformers=4.46", checkpointing_variant="non-reentrant")["forward"]["logits_loss"]
    new = phases(stack="transformers=4.49", checkpointing_variant="non-reentrant")["forward"]["logits_loss"]
    assert old - new == B * S * V * 4


def test_transformers_4_44_holds_fp32_logits_and_their_shifted_copy_but_not_the_bf16_logits():
    old = phases(stack="transformers=4.44")["forward"]["logits_loss"]
    new = phases(stack="current")["forward"]["logits_loss"]
    assert old - new == B * S * V * (12 - (2 + 8))


def test_the_loss_backward_is_the_same_in_every_version():
    backward = {phases(stack=f"transformers={v}")["loss_backward"]["logits_loss"] for v in ("4.44", "4.46", "5.24")}
    assert len(backward) == 1


def test_bnb_0_43_2_is_the_first_release_that_frees_4bit_matmul_inputs():
    assert bnb_4bit_keeps_matmul_inputs(resolve_stack("bitsandbytes=0.43.1")["bitsandbytes"])
    assert not bnb_4bit_keeps_matmul_inputs(resolve_stack("bitsandbytes=0.43.2")["bitsandbytes"])


def held_per_token_bf16_compute_fp32_stream() -> tuple[int, int]:
    """Linear4bit casts its fp32 input to bf16 per linear: q, k, v (3 x 2h), o_proj reads the bf16 attention
    output (2q, shared), gate, up (2 x 2h), down (2i). Layer 1 holds no q/k/v input (embedding needs no grad)."""
    per_layer = 3 * 2 * H + 2 * Q + 2 * 2 * H + 2 * I
    return per_layer, per_layer - 3 * 2 * H


def test_bnb_0_43_1_with_non_reentrant_checkpointing_keeps_every_layers_linear_inputs():
    per_layer, first = held_per_token_bf16_compute_fp32_stream()
    old = phases(stack="bitsandbytes=0.43.1", checkpointing_variant="non-reentrant")
    new = phases(stack="current", checkpointing_variant="non-reentrant")
    held = ((LAYERS - 1) * per_layer + first) * B * S
    assert old["forward"]["activations"] - new["forward"]["activations"] == held
    assert old["loss_backward"]["activations"] - new["loss_backward"]["activations"] == held
    assert old["layer_backward"]["activations"] - new["layer_backward"]["activations"] == held + per_layer * B * S
    assert old["backward_end"]["activations"] - new["backward_end"]["activations"] == 2 * first * B * S
    assert held > 4.5 * 2**30  # the "about +5 GB" for Llama-3.1-8B at seq 2048


def test_bnb_0_43_1_with_reentrant_checkpointing_holds_only_the_recomputed_layer():
    per_layer, _ = held_per_token_bf16_compute_fp32_stream()
    old = phases(stack="bitsandbytes=0.43.1", checkpointing_variant="reentrant")
    new = phases(stack="current", checkpointing_variant="reentrant")
    assert old["forward"]["activations"] == new["forward"]["activations"]
    assert old["layer_backward"]["activations"] - new["layer_backward"]["activations"] == per_layer * B * S


def test_int8_holds_each_linears_input_itself_and_copies_the_weight_in_backward():
    run = RunConfig(seq_len=S, micro_batch_size=B, weight_format="int8")
    terms = phase_terms(MODEL, GPU, run)
    held = {t.name: t.bytes for t in terms["forward"]["activations"] if t.name.startswith("ctx-held")}
    # MatMul8bitLt keeps A uncast: the fp32 norm output once for q/k/v (4h) and gate/up (4h), the bf16
    # attention output (2q), the fp32 product for down (4i); layer 1 without its q/k/v input
    per_layer = 4 * H + 2 * Q + 4 * H + 4 * I
    assert held == {"ctx-held matmul inputs, layers 2..L": (LAYERS - 1) * per_layer * B * S,
                    "ctx-held matmul inputs, layer 1": (per_layer - 4 * H) * B * S}
    copy = [t for t in terms["layer_backward"]["activations"] if t.name.startswith("int8 backward weight copy")]
    assert [t.bytes for t in copy] == [I * H * 4]  # gate/up/down: 14336 x 4096 in their fp32 input dtype


def test_4bit_on_the_current_stack_holds_no_matmul_inputs():
    terms = phase_terms(MODEL, GPU, RunConfig(seq_len=S))
    assert not [t for t in terms["forward"]["activations"] if t.name.startswith("ctx-held")]


def test_checkpointing_default_follows_the_transformers_version():
    assert default_checkpoint_reentrant(resolve_stack("transformers=4.57")["transformers"])
    assert not default_checkpoint_reentrant(resolve_stack("transformers=5.0")["transformers"])
    assert estimate("llama-3.1-8b", "a10g", stack="transformers=4.46").stack["checkpointing"] == "reentrant"
    assert estimate("llama-3.1-8b", "a10g", stack="transformers=4.46",
                    checkpointing_variant="non-reentrant").stack["checkpointing"] == "non-reentrant"


def test_reentrant_checkpointing_makes_layer_1_save_its_norm_input():
    reentrant = RunConfig(checkpointing_variant="reentrant")
    assert first_layer_unsaved_per_token(MODEL, reentrant, resolve_dtypes(reentrant, GPU, MODEL)) == 0
    plain = RunConfig()
    assert first_layer_unsaved_per_token(MODEL, plain, resolve_dtypes(plain, GPU, MODEL)) > 0


def test_transformers_4_loads_bnb_models_in_fp16_and_dequantizes_twice_on_bf16_gpus():
    old = RunConfig(stack="transformers=4.46")
    new = RunConfig(stack="current")
    largest = I * H
    assert dequant_temp_bytes(MODEL, resolve_dtypes(old, GPU, MODEL)) == largest * (2 + 2)
    assert dequant_temp_bytes(MODEL, resolve_dtypes(new, GPU, MODEL)) == largest * 2
    t4 = get_gpu("t4")  # fp16 compute: the load dtype already is the compute dtype
    assert dequant_temp_bytes(MODEL, resolve_dtypes(old, t4, MODEL)) == largest * 2


@pytest.mark.parametrize("stack, optimizer", [("torch=2.13", "adamw_fused"), ("torch=2.7", "adamw"),
                                              ("transformers=4.53,torch=2.8", "adamw"),
                                              ("transformers=4.54,torch=2.8", "adamw_fused")])
def test_trainer_default_optimizer_by_torch_and_transformers(stack, optimizer):
    versions = resolve_stack(stack)
    assert trainer_default_optimizer(versions["transformers"], versions["torch"]) == optimizer


def test_the_current_stack_plans_exactly_as_the_default():
    for fields in ({}, {"weight_format": "int8"}, {"method": "lora"}, {"gradient_checkpointing": False}):
        pinned = estimate("llama-3.1-8b", "a10g", stack="current", **fields)
        default = estimate("llama-3.1-8b", "a10g", **fields)
        assert pinned.phase_peaks == default.phase_peaks and pinned.terms == default.terms


def test_the_versions_ci_installs_plan_exactly_as_the_current_releases():
    installed = "transformers=5.24.0,peft=0.21.2,bitsandbytes=0.50.2,torch=2.13.0"
    for fields in ({}, {"weight_format": "int8"}, {"method": "full"}):
        ci = estimate("llama-3.1-8b", "a10g", stack=installed, **fields)
        current = estimate("llama-3.1-8b", "a10g", stack="current", **fields)
        assert ci.phase_peaks == current.phase_peaks and ci.terms == current.terms
