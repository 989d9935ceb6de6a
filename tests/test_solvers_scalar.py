"""The scalar solvers are exact and logarithmic (issue 13, item 14).

They search `plan`'s pure-Python path (no numpy), so they are checked here against a brute
force over every value with the vectorized verdict `fits_many`, including the GPU sizes where
rank is not monotone (paged / 8-bit optimizer state switches format at fixed element counts).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan import solvers
from vramplan.catalog import get_model
from vramplan.estimate import make_run, plan
from vramplan.gpus import custom_gpu, get_gpu
from vramplan.memory.dtypes import resolve_dtypes

SMALL_MODELS = ["tinyllama-1.1b", "qwen2.5-0.5b", "llama-3.2-1b", "7b"]
FIELDS = {"batch": "micro_batch_size", "seq": "seq_len", "rank": "lora_rank"}


def brute_force(model, gpu, run, field, limit) -> int:
    """Largest value in [1, limit] whose plan fits, every value checked (vectorized)."""
    values = np.arange(1, limit + 1, dtype=np.int64)
    ok = solvers.fits_many(model, gpu, run, resolve_dtypes(run, gpu, model), **{field: values})
    return int(values[np.flatnonzero(ok)[-1]]) if ok.any() else 0


def gpu_between_ranks(model, run, low_rank, high_rank, fraction):
    """A custom GPU whose capacity lies `fraction` of the way between the plans at two ranks."""
    low = plan(model, custom_gpu(2**40, "1TiB"), run.model_copy(update={"lora_rank": low_rank})).required_bytes
    high = plan(model, custom_gpu(2**40, "1TiB"), run.model_copy(update={"lora_rank": high_rank})).required_bytes
    return custom_gpu(int(min(low, high) + fraction * abs(high - low)), "between")


runs = st.builds(
    dict,
    method=st.sampled_from(["qlora", "lora"]),
    optimizer=st.sampled_from(["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "adafactor"]),
    gradient_checkpointing=st.booleans(),
    attention=st.sampled_from(["sdpa", "eager"]),
    micro_batch_size=st.sampled_from([1, 2]),
    seq_len=st.sampled_from([128, 512]),
    lora_rank=st.sampled_from([8, 16]),
    lora_targets=st.sampled_from([("all-linear",), ("q_proj", "v_proj")]),
    compute_dtype=st.just("fp16"),
)


@settings(max_examples=150, deadline=None)
@given(model_name=st.sampled_from(SMALL_MODELS), fields=runs, dimension=st.sampled_from(list(FIELDS)),
       limit=st.integers(1, 300), data=st.data(), fraction=st.floats(0, 1))
def test_scalar_solver_equals_brute_force(model_name, fields, dimension, limit, data, fraction):
    model, run = get_model(model_name), make_run(**fields)
    # capacity between the plans just below and at a breakpoint, where rank is not monotone,
    # or between two arbitrary ranks
    breakpoints = [low for low, _high in solvers.rank_segments(model, run, resolve_dtypes(run, get_gpu("h100"), model),
                                                                 300)][1:]
    if breakpoints and data.draw(st.booleans()):
        high_rank = data.draw(st.sampled_from(breakpoints))
        low_rank = high_rank - 1
    else:
        low_rank = data.draw(st.integers(1, 60))
        high_rank = low_rank + data.draw(st.integers(1, 200))
    gpu = gpu_between_ranks(model, run, low_rank, high_rank, fraction)
    field = FIELDS[dimension]
    assert solvers.max_size(dimension, model, gpu, run, limit=limit) == brute_force(model, gpu, run, field, limit)


def test_rank_solver_finds_a_fitting_rank_above_one_that_does_not():
    # Llama-2-7B paged_adamw: r=24 keeps some 32-bit state on the device, r=25 pages it (1e5 elements)
    model, run = get_model("7b"), make_run(method="qlora", optimizer="paged_adamw", seq_len=512)
    gpu = gpu_between_ranks(model, run, 24, 25, 0.5)
    assert plan(model, gpu, run.model_copy(update={"lora_rank": 25})).fits
    assert not plan(model, gpu, run.model_copy(update={"lora_rank": 24})).fits
    answer = solvers.max_lora_rank(model, gpu, run, limit=512)
    assert answer >= 25 and answer == brute_force(model, gpu, run, "lora_rank", 512)


def test_huge_limits_cost_a_handful_of_plans():
    calls = []
    model, gpu, run = get_model("13b"), custom_gpu(2**48, "256TiB"), make_run()  # GPU_BOUNDS: at most 2**48 bytes
    import vramplan.solvers as module

    real = module.peak_allocated_bytes

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    module.peak_allocated_bytes = counting
    try:
        assert solvers.max_lora_rank(model, gpu, run, limit=2**31) > 4096
        assert solvers.max_seq_len(model, gpu, run, limit=2**40) > 1_000_000
    finally:
        module.peak_allocated_bytes = real
    assert len(calls) < 400


def test_solvers_take_the_names_estimate_takes():
    assert solvers.max_seq_len("13b", "t4") == 4301
    assert solvers.max_micro_batch("13b", "t4", {"seq_len": 512}) == 8
    assert solvers.max_lora_rank("13b", "t4", make_run()) == 85


def test_margin_keeps_that_much_free():
    model, run = get_model("13b"), make_run()
    from vramplan.gpus import get_gpu

    gpu = get_gpu("t4")
    margin = 2**30
    rank = solvers.max_lora_rank(model, gpu, run, margin_bytes=margin)
    at = plan(model, gpu, run.model_copy(update={"lora_rank": rank}), margin_bytes=margin)
    above = plan(model, gpu, run.model_copy(update={"lora_rank": rank + 1}), margin_bytes=margin)
    assert at.fits and at.required_bytes + margin <= gpu.capacity_bytes and not above.fits
    assert rank < solvers.max_lora_rank(model, gpu, run)


def test_solver_path_does_not_import_numpy():
    probe = ("import sys; from vramplan import solvers; "
             "print(solvers.max_lora_rank('13b', 't4'), solvers.max_seq_len('13b', 't4'), "
             "'numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["85", "4301", "False"], done.stderr[-400:]
