"""A verdict that does not fit leads with why, when one assumption or component dominates."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan.advice import advise
from vramplan.catalog import get_model, list_models
from vramplan.cli.fit import render
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu, list_gpus
from vramplan.reasons import DOMINANT_SHARE


def test_mixtral_qlora_verdict_leads_with_unquantized_fused_experts_and_the_fix():
    model, gpu, run = get_model("mixtral-8x7b"), get_gpu("a100"), make_run(method="qlora")
    breakdown = plan(model, gpu, run)
    assert not breakdown.fits
    assert breakdown.reason.startswith("unquantized MoE experts take")
    assert "fused 3-D parameters" in breakdown.reason and "--moe-experts linear" in breakdown.reason
    lines = render(breakdown).splitlines()
    assert lines[1].startswith("DOES NOT FIT") and lines[2] == f"why: {breakdown.reason}"
    assert not any(note in breakdown.reason for note in breakdown.notes), "the reason is not repeated as a note"
    fixed = plan(model, gpu, run.model_copy(update={"moe_experts": "linear"}))
    assert fixed.fits and fixed.reason == ""
    assert advise(model, gpu, run)[0].flags == "--moe-experts linear"


def test_logits_dominating_a_128k_vocabulary_run_are_the_reason_with_chunked_loss():
    breakdown = plan(get_model("llama-3.1-8b"), get_gpu("4090"), make_run(seq_len=4096, micro_batch_size=4))
    assert breakdown.logits_loss > DOMINANT_SHARE * breakdown.required_bytes
    assert breakdown.reason.startswith("the logits and loss") and "--loss-impl chunked" in breakdown.reason


def test_weights_larger_than_the_gpu_are_the_reason():
    breakdown = plan(get_model("70b"), get_gpu("t4"), make_run())
    weights = breakdown.quantized_weights + breakdown.quant_state + breakdown.float_weights
    assert weights > breakdown.capacity_bytes
    assert breakdown.reason.startswith("the weights alone") and "bigger GPU" in breakdown.reason


def test_activations_without_checkpointing_are_the_reason_with_the_flag():
    run = make_run(seq_len=4096, micro_batch_size=4, gradient_checkpointing=False)
    breakdown = plan(get_model("llama-3.1-8b"), get_gpu("t4"), run)
    assert "--gradient-checkpointing" in breakdown.reason


def test_no_reason_when_nothing_dominates():
    breakdown = plan(get_model("llama-3.1-8b"), get_gpu("a100"), make_run(method="full", seq_len=2048))
    assert not breakdown.fits
    assert max(breakdown.components().values()) <= DOMINANT_SHARE * breakdown.required_bytes
    assert breakdown.reason == ""
    assert "why:" not in render(breakdown)


@settings(max_examples=60)
@given(model=st.sampled_from([m.name for m in list_models()]), gpu=st.sampled_from([g.key for g in list_gpus()]),
       method=st.sampled_from(["qlora", "lora", "full", "inference"]), batch=st.sampled_from([1, 8]),
       seq=st.sampled_from([512, 8192]), checkpointing=st.booleans())
def test_a_reason_only_explains_a_run_that_does_not_fit_by_something_that_dominates(
        model, gpu, method, batch, seq, checkpointing):
    breakdown = plan(get_model(model), get_gpu(gpu), make_run(
        method=method, micro_batch_size=batch, seq_len=seq, gradient_checkpointing=checkpointing))
    if breakdown.fits:
        assert breakdown.reason == ""
    elif breakdown.reason:
        weights = breakdown.quantized_weights + breakdown.quant_state + breakdown.float_weights
        assert weights > breakdown.capacity_bytes or \
            max(breakdown.components().values()) > DOMINANT_SHARE * breakdown.required_bytes


def test_fused_experts_are_the_reason_when_they_make_the_weights_exceed_the_gpu():
    run = make_run(method="qlora", seq_len=8192, micro_batch_size=8, gradient_checkpointing=False)
    breakdown = plan(get_model("mixtral-8x7b"), get_gpu("h100"), run)
    assert breakdown.activations > DOMINANT_SHARE * breakdown.required_bytes  # not the experts' share of the need
    assert breakdown.reason.startswith("unquantized MoE experts take") and "--moe-experts linear" in breakdown.reason
