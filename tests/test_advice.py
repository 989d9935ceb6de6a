"""Advice: re-planned changes, fitting ones first and cheapest first; room-to-spare hints that fit."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan.advice import COSTS, TIER_OF, TIERS, advise, model_family, render_advice, spare_room
from vramplan.catalog import get_model, list_models
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu, list_gpus
from vramplan.specs import ModelSpec

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
    else:
        assert_cheapest_fitting_change_first(advice)


def assert_cheapest_fitting_change_first(advice):
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


def assert_nothing_important_is_cut(model, gpu, run):
    """The default list keeps every change that fits alone and each tier's biggest saver."""
    shown, everything = advise(model, gpu, run), advise(model, gpu, run, limit=100)
    shown_keys = {(a.model.name, a.gpu.key, a.run) for a in shown}
    for item in everything:
        if item.fits and len(item.kinds) == 1:
            assert (item.model.name, item.gpu.key, item.run) in shown_keys, f"{item.change} fits alone but is cut"
    for tier in range(len(TIERS)):
        in_tier = [a for a in everything if max(TIER_OF[k] for k in a.kinds) == tier]
        if in_tier:
            best = max(a.saved_bytes for a in in_tier)
            assert any(a.saved_bytes == best for a in shown), f"tier {TIERS[tier][0]}: its biggest saver is cut"
    return shown


@settings(max_examples=40)
@given(model_name=st.sampled_from(MODELS), gpu_key=st.sampled_from(GPUS), fields=big_runs)
def test_advice_never_cuts_a_change_that_fits_alone_or_a_tiers_biggest_saver(model_name, gpu_key, fields):
    model, gpu, run = get_model(model_name), get_gpu(gpu_key), make_run(**fields)
    if not plan(model, gpu, run).fits:
        assert_nothing_important_is_cut(model, gpu, run)


def test_4090_llama_8b_batch_4_seq_4096_shows_chunked_loss_and_skipping_kbit_prep_over_small_tweaks():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("4090")
    run = make_run(seq_len=4096, micro_batch_size=4)
    shown = assert_nothing_important_is_cut(model, gpu, run)
    by_kind = {a.kinds: a for a in shown}
    assert by_kind[("chunked_loss",)].saved_bytes > 10 * 2**30
    assert by_kind[("kbit_prep",)].saved_bytes > 6 * 2**30
    helping = [a for a in shown if not a.fits]
    assert helping[0].kinds == ("chunked_loss",), "the biggest saver of the tier leads the changes that help"
    hidden = [a for a in advise(model, gpu, run, limit=100) if a not in shown]
    assert max(a.saved_bytes for a in hidden) < min(a.saved_bytes for a in helping)


def test_full_fine_tuning_is_offered_adafactor_8bit_and_pure_16bit():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("a100")
    run = make_run(method="full", seq_len=2048)
    advice = advise(model, gpu, run, limit=100)
    flags = {a.flags for a in advice}
    assert {"--optimizer adafactor", "--full-precision pure"} <= flags
    assert any(a.flags.startswith("--optimizer") and "8bit" in a.flags for a in advice)
    pure = next(a for a in advice if a.flags == "--full-precision pure")
    assert pure.run.full_precision == "pure" and pure.saved_bytes > 0
    assert_advice_is_replanned(model, gpu, run, advice)


def test_fp8_kv_cache_is_offered_for_inference_only_where_the_gpu_has_fp8():
    model, run = get_model("llama-3.1-8b"), make_run(method="inference", seq_len=32768, micro_batch_size=16)
    on_h100 = [a for a in advise(model, get_gpu("h100"), run, limit=100) if a.kinds == ("kv_cache",)]
    assert len(on_h100) == 1 and on_h100[0].run.kv_cache_dtype == "fp8" and on_h100[0].saved_bytes > 0
    assert on_h100[0].flags == "--kv-cache-dtype fp8"
    assert get_gpu("a100").fp8 is False
    assert not [a for a in advise(model, get_gpu("a100"), run, limit=100) if a.kinds == ("kv_cache",)]


def test_mixtral_qlora_first_advice_is_the_per_expert_linear_layout():
    model, gpu = get_model("mixtral-8x7b"), get_gpu("a100")
    first = advise(model, gpu, make_run(method="qlora"))[0]
    assert first.kinds == ("moe_experts",) and first.fits and first.flags == "--moe-experts linear"
    assert first.run.moe_experts == "linear"


def test_a_smaller_model_comes_from_the_same_family_when_one_fits():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("a100")
    smaller = next(a for a in advise(model, gpu, make_run(method="full", seq_len=2048)) if a.kinds == ("model",))
    assert model_family(smaller.model) == "llama-3" and smaller.model.name.startswith("llama-3")
    assert "same family" in smaller.change


def test_model_family_is_the_name_up_to_its_major_version():
    def family(name):
        return model_family(ModelSpec(name=name, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                      num_attention_heads=4, vocab_size=100))

    assert family("llama-3.1-8b") == family("llama-3.3-70b") == family("meta-llama/Llama-3.2-1B") == "llama-3"
    assert family("llama-2-7b") == "llama-2"
    assert family("mistral-7b-v0.3") == family("mistral-nemo-12b") == "mistral"
    assert family("mixtral-8x7b") == "mixtral"
    assert family("qwen2.5-7b") == "qwen2" and family("qwen3-0.6b") == family("Qwen/Qwen3-8B") == "qwen3"
    assert family("gemma-2-9b") == "gemma-2" and family("gemma-3-27b") == "gemma-3"
    assert family("phi-3-mini-4k") == "phi-3" and family("phi-4") == "phi-4"
    assert family("tinyllama-1.1b") == "tinyllama"


def test_a_change_that_costs_bytes_alone_can_complete_a_combination():
    """Per-expert linears alone add expert LoRA activations, yet they are what lets Mixtral fit beside others."""
    model, gpu = get_model("mixtral-8x7b"), get_gpu("h100")
    run = make_run(method="qlora", seq_len=8192, micro_batch_size=8, gradient_checkpointing=False)
    advice = advise(model, gpu, run, limit=100)
    assert not any(a.kinds == ("moe_experts",) for a in advice), "alone it saves nothing here"
    assert advice[0].fits and "moe_experts" in advice[0].kinds and "--moe-experts linear" in advice[0].flags
    assert_advice_is_replanned(model, gpu, run, advice)
