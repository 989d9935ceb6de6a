"""Solvers: every answer fits and the next step does not; smallest GPU and largest model are extremal."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan import solvers
from vramplan.catalog import get_model, list_models
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import custom_gpu, get_gpu, list_gpus
from vramplan.memory.parameters import parameter_count

MODELS = [m.name for m in list_models()]
GPUS = [g.key for g in list_gpus()]
FIELDS = {"batch": "micro_batch_size", "seq": "seq_len", "rank": "lora_rank"}
LIMITS = {"batch": 4096, "seq": 1_048_576, "rank": 4096}


def fits_at(model, gpu, run, field, value) -> bool:
    return plan(model, gpu, run.model_copy(update={field: value})).fits


runs = st.builds(
    dict,
    method=st.sampled_from(["qlora", "lora", "full", "inference"]),
    optimizer=st.sampled_from(["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "sgd", "adafactor"]),
    gradient_checkpointing=st.booleans(),
    attention=st.sampled_from(["sdpa", "eager"]),
    loss_impl=st.sampled_from(["standard", "chunked"]),
    micro_batch_size=st.sampled_from([1, 2, 4]),
    seq_len=st.sampled_from([256, 512, 2048]),
    lora_rank=st.sampled_from([8, 16, 64]),
    compute_dtype=st.just("fp16"),  # every profile runs fp16, so no combination is refused
)
gpu_sizes = st.one_of(st.sampled_from(GPUS).map(get_gpu),
                      st.integers(2, 200).map(lambda gib: custom_gpu(gib * 2**30, f"{gib}GiB")))


@settings(max_examples=50)
@given(model_name=st.sampled_from(MODELS), gpu=gpu_sizes, fields=runs, dimension=st.sampled_from(list(FIELDS)))
def test_solver_answer_fits_and_the_next_value_does_not(model_name, gpu, fields, dimension):
    model, run = get_model(model_name), make_run(**fields)
    if dimension == "rank" and not run.uses_lora:
        with pytest.raises(InputError):
            solvers.max_lora_rank(model, gpu, run)
    else:
        field = FIELDS[dimension]
        answer = solvers.max_size(dimension, model, gpu, run)
        if answer:
            assert fits_at(model, gpu, run, field, answer)
        if answer < LIMITS[dimension]:
            assert not fits_at(model, gpu, run, field, answer + 1)


@settings(max_examples=15)
@given(model_name=st.sampled_from(["tinyllama-1.1b", "qwen2.5-0.5b", "llama-3.2-1b"]),
       gib=st.integers(2, 12), fields=runs)
def test_batch_and_rank_answers_are_the_largest_that_fit_by_brute_force(model_name, gib, fields):
    model, gpu, run = get_model(model_name), custom_gpu(gib * 2**30, f"{gib}GiB"), make_run(**fields)
    limit = 48
    batch = solvers.max_micro_batch(model, gpu, run, limit=limit)
    assert batch == max([b for b in range(1, limit + 1) if fits_at(model, gpu, run, "micro_batch_size", b)], default=0)
    if run.uses_lora:
        rank = solvers.max_lora_rank(model, gpu, run, limit=limit)
        assert rank == max([r for r in range(1, limit + 1) if fits_at(model, gpu, run, "lora_rank", r)], default=0)


def test_max_seq_of_13b_qlora_on_t4_is_exact():
    model, gpu, run = get_model("13b"), get_gpu("t4"), make_run()
    seq = solvers.max_seq_len(model, gpu, run)
    assert 512 < seq < 1_048_576
    assert fits_at(model, gpu, run, "seq_len", seq) and not fits_at(model, gpu, run, "seq_len", seq + 1)


def test_nothing_fits_gives_zero_and_limit_caps_the_answer():
    tiny = custom_gpu(2**30, "1GiB")
    assert solvers.max_micro_batch(get_model("70b"), tiny, make_run()) == 0
    assert solvers.max_seq_len(get_model("70b"), tiny, make_run()) == 0
    assert solvers.max_micro_batch(get_model("tinyllama"), get_gpu("h200"), make_run(), limit=3) == 3


def test_largest_monotone_finds_the_boundary_of_any_threshold():
    for threshold in (1, 2, 3, 63, 64, 65, 1000, 99_999):
        assert solvers.largest_monotone(lambda x, t=threshold: np.asarray(x) <= t, 1_000_000) == threshold
    assert solvers.largest_monotone(lambda x: np.asarray(x) <= 0, 100) == 0
    assert solvers.largest_monotone(lambda x: np.asarray(x) > 0, 100) == 100


def test_rank_solver_refuses_methods_without_lora():
    with pytest.raises(InputError, match="method"):
        solvers.max_lora_rank(get_model("7b"), get_gpu("a100"), make_run(method="full"))
    with pytest.raises(InputError, match="dimension"):
        solvers.max_size("width", get_model("7b"), get_gpu("a100"), make_run())


@settings(max_examples=12)
@given(model_name=st.sampled_from(MODELS), fields=runs)
def test_smallest_gpu_fits_and_no_smaller_profile_does(model_name, fields):
    model, run = get_model(model_name), make_run(**fields)
    found = solvers.smallest_gpu(model, run)
    fitting = [g for g in list_gpus() if plan(model, g, run).fits]
    if found is None:
        assert fitting == []
    else:
        assert plan(model, found, run).fits
        assert found.capacity_bytes == min(g.capacity_bytes for g in fitting)


@settings(max_examples=12)
@given(gpu_key=st.sampled_from(GPUS), fields=runs)
def test_largest_model_fits_and_no_bigger_catalog_model_does(gpu_key, fields):
    gpu, run = get_gpu(gpu_key), make_run(**fields)
    found = solvers.largest_model(gpu, run)
    fitting = [m for m in list_models() if plan(m, gpu, run).fits]
    if found is None:
        assert fitting == []
    else:
        assert plan(found, gpu, run).fits
        assert parameter_count(found) == max(parameter_count(m) for m in fitting)


def test_solvers_use_the_same_verdict_as_plan_at_the_byte_boundary():
    model, run = get_model("7b"), make_run(seq_len=1024)
    needed = plan(model, get_gpu("a100"), run.model_copy(update={"micro_batch_size": 3})).required_bytes
    exact = custom_gpu(needed, "exact")
    assert solvers.max_micro_batch(model, exact, run) == 3
    assert solvers.max_micro_batch(model, custom_gpu(needed - 1, "one byte short"), run) == 2
