"""`sweep`, the solvers and `plan` (what `fit` prints) agree on verdict and peak near every bound.

Values at and around RUN_BOUNDS and the solvers' limits multiply past 2**63 bytes (batch 2**20 x
seq 2**24 x a 256k vocab); the vectorised sweep must give the same exact, positive numbers as the
scalar plan there, never a wrapped or negative one (issue 14).
"""
from __future__ import annotations

import pytest

from vramplan.estimate import plan
from vramplan.solvers import DEFAULT_LIMITS, max_size, resolve_specs
from vramplan.specs import RunConfig
from vramplan.specs.bounds import RUN_BOUNDS
from vramplan.sweep import sweep

BATCHES = sorted({1, DEFAULT_LIMITS["batch"] - 1, DEFAULT_LIMITS["batch"], DEFAULT_LIMITS["batch"] + 1,
                  RUN_BOUNDS["micro_batch_size"] - 1, RUN_BOUNDS["micro_batch_size"]})
SEQS = sorted({1, DEFAULT_LIMITS["seq"], DEFAULT_LIMITS["seq"] + 1, RUN_BOUNDS["seq_len"]})
RANKS = sorted({1, DEFAULT_LIMITS["rank"], RUN_BOUNDS["lora_rank"]})
RUNS = {
    "qlora": {},
    "lora-no-checkpointing": {"method": "lora", "gradient_checkpointing": False},
    "full": {"method": "full"},
}


@pytest.mark.parametrize("gpu_name", ["t4", "256TiB"])
@pytest.mark.parametrize("model_name", ["7b", "gemma-2-27b"])
@pytest.mark.parametrize("run_name", list(RUNS))
def test_sweep_agrees_with_plan_on_peak_and_verdict_at_the_bounds(model_name, gpu_name, run_name):
    model, gpu = resolve_specs(model_name, gpu_name)
    run = RunConfig(**RUNS[run_name])
    result = sweep(model, gpu, run, batch=BATCHES, seq=SEQS, rank=RANKS)
    for row in result.records():
        fields = {"micro_batch_size": row["micro_batch_size"], "seq_len": row["seq_len"]}
        if run.uses_lora:
            fields["lora_rank"] = row["lora_rank"]
        exact = plan(model, gpu, run.model_copy(update=fields))
        assert row["peak_allocated_bytes"] > 0 and row["required_bytes"] > 0, row
        assert (row["peak_allocated_bytes"], row["required_bytes"], row["fits"]) == (
            exact.peak_allocated_bytes, exact.required_bytes, exact.fits), row
        assert row["headroom_bytes"] == gpu.capacity_bytes - exact.required_bytes


@pytest.mark.parametrize("dimension", ["batch", "seq", "rank"])
@pytest.mark.parametrize("limit", ["solver", "bound", 1 << 62])
def test_solver_answer_on_a_huge_gpu_fits_and_one_more_does_not(dimension, limit):
    field = {"batch": "micro_batch_size", "seq": "seq_len", "rank": "lora_rank"}[dimension]
    limit = {"solver": DEFAULT_LIMITS[dimension], "bound": RUN_BOUNDS[field]}.get(limit, limit)
    model, gpu = resolve_specs("7b", "256TiB")
    run = RunConfig(method="lora", gradient_checkpointing=False)
    best = max_size(dimension, model, gpu, run, limit=limit)
    assert 1 <= best <= limit
    at_best = plan(model, gpu, run.model_copy(update={field: best}))
    assert at_best.fits and at_best.peak_allocated_bytes > 0
    swept = sweep(model, gpu, run, **{dimension: [best, best + 1]}).records()
    assert swept[0]["fits"] and swept[0]["required_bytes"] == at_best.required_bytes
    if best < limit and best + 1 <= RUN_BOUNDS[field]:
        assert not plan(model, gpu, run.model_copy(update={field: best + 1})).fits
        assert not swept[1]["fits"]
