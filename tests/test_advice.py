"""Advice: re-planned changes, fitting ones first and cheapest first; room-to-spare hints that fit."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan.advice import COSTS, advise, render_advice, spare_room
from vramplan.catalog import get_model, list_models
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu, list_gpus

MODELS = [m.name for m in list_models()]
GPUS = [g.key for g in list_gpus()]

big_runs = st.builds(
    dict,
    method=st.sampled_from(["qlora", "lora", "full", "inference"]),
    optimizer=st.sampled_from(["adamw", "adamw_8bit", "paged_adamw", "sgd"]),
    gradient_checkpointing=st.booleans(),
    micro_batch_size=st.sampled_from([1, 4, 8, 16]),
    grad_accum_steps=st.sampled_from([1, 2]),
    seq_len=st.sampled_from([1024, 4096, 8192]),
    lora_rank=st.sampled_from([16, 64]),
    compute_dtype=st.just("fp16"),
)


def assert_advice_is_replanned(model, gpu, run, advice):
    base = plan(model, gpu, run)
    for item in advice:
        again = plan(item.model, item.gpu, item.run)
        assert item.breakdown == again
        assert item.fits == again.fits
        assert item.saved_bytes == base.peak_allocated_bytes - again.peak_allocated_bytes


@settings(max_examples=40)
@given(model_name=st.sampled_from(MODELS), gpu_key=st.sampled_from(GPUS), fields=big_runs)
def test_first_advice_fits_whenever_any_offered_change_fits(model_name, gpu_key, fields):
    model, gpu, run = get_model(model_name), get_gpu(gpu_key), make_run(**fields)
    advice = advise(model, gpu, run)
    assert_advice_is_replanned(model, gpu, run, advice)
    if plan(model, gpu, run).fits:
        assert all(item.fits for item in advice)
        return
    if any(item.fits for item in advice):
        assert advice[0].breakdown.fits is True
        assert advice[0].fits == plan(advice[0].model, advice[0].gpu, advice[0].run).fits
    flags = [item.fits for item in advice]
    assert flags == sorted(flags, reverse=True), "changes that fit come first"
    fitting_costs = [item.cost for item in advice if item.fits]
    assert fitting_costs == sorted(fitting_costs), "cheapest fitting change first"
    assert all(item.fits or item.saved_bytes > 0 for item in advice), "a change that does not fit must help"


def test_13b_batch_8_on_t4_first_lowers_micro_batch_keeping_the_effective_batch():
    model, gpu = get_model("13b"), get_gpu("t4")
    run = make_run(micro_batch_size=8, seq_len=2048)
    first = advise(model, gpu, run)[0]
    assert first.kinds == ("batch",) and first.fits
    assert first.run.micro_batch_size * first.run.grad_accum_steps == 8
    assert first.run.micro_batch_size < 8 and "--accum" in first.flags


def test_cheapest_combination_is_offered_when_no_single_cheap_change_fits():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("t4")
    run = make_run(micro_batch_size=4, seq_len=4096, gradient_checkpointing=False)
    advice = advise(model, gpu, run)
    singles = [a for a in advice if len(a.kinds) == 1 and COSTS[a.kinds[0]] < COSTS["method"]]
    assert singles and not any(a.fits for a in singles)
    combination = advice[0]
    assert combination.fits and len(combination.kinds) >= 2
    assert "checkpointing" in combination.kinds and combination.run.gradient_checkpointing
    assert_advice_is_replanned(model, gpu, run, advice)


def test_savings_are_recomputed_for_each_config_not_read_from_a_table():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("t4")

    def checkpointing_saving(seq_len):
        run = make_run(seq_len=seq_len, micro_batch_size=4, gradient_checkpointing=False)
        return next(a.saved_bytes for a in advise(model, gpu, run, limit=20) if a.kinds == ("checkpointing",))

    assert checkpointing_saving(4096) > checkpointing_saving(2048) > 0


def test_chunked_loss_is_suggested_for_a_big_vocabulary():
    model, gpu = get_model("gemma-2-2b"), get_gpu("rtx3060")
    run = make_run(seq_len=8192, micro_batch_size=2)
    advice = advise(model, gpu, run, limit=20)
    chunked = [a for a in advice if a.kinds == ("chunked_loss",)]
    assert chunked and chunked[0].run.loss_impl == "chunked" and chunked[0].saved_bytes > 0


def test_room_to_spare_hints_fit_and_grow_the_run():
    model, gpu, run = get_model("13b"), get_gpu("a100"), make_run()
    hints = spare_room(model, gpu, run)
    assert hints and all(h.fits for h in hints)
    batch = next(h for h in hints if h.kinds == ("batch",))
    assert batch.run.micro_batch_size > 1 and batch.saved_bytes < 0
    assert not plan(model, gpu, batch.run.model_copy(update={"micro_batch_size": batch.run.micro_batch_size + 1})).fits
    assert advise(model, gpu, run) == hints[:8]
    assert "room to spare" in render_advice(hints, True)


def test_render_advice_says_what_each_change_saves_and_its_flags():
    model, gpu = get_model("13b"), get_gpu("t4")
    advice = advise(model, gpu, make_run(micro_batch_size=8, seq_len=2048))
    text = render_advice(advice, False)
    assert text.startswith("to make it fit:")
    assert "saves" in text and "FITS" in text and "[--batch" in text
    assert render_advice([], False) == "no change found that makes it fit on this GPU"


def test_skipping_kbit_preparation_is_offered_and_replanned():
    from vramplan.catalog import get_model
    from vramplan.estimate import make_run, plan
    from vramplan.gpus import get_gpu

    model, gpu, run = get_model("mixtral-8x7b"), get_gpu("h200"), make_run(method="qlora")
    advice = [a for a in advise(model, gpu, run, limit=20) if a.kinds == ("kbit_prep",)]
    assert len(advice) == 1 and advice[0].flags == "--no-kbit-prep" and advice[0].run.kbit_prep is False
    assert advice[0].breakdown == plan(model, gpu, advice[0].run)
    assert advice[0].saved_bytes > 0
