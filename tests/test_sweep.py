"""Vectorized sweeps: every row equals the scalar plan; bad grids are InputErrors; the benchmark runs."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan.catalog import get_model, list_models
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.sweep import COLUMNS, count_fitting, sweep

MODELS = [m.name for m in list_models()]


def assert_rows_match_plan(model, gpu, run, result):
    for row in result.records():
        update = {"method": row["method"], "micro_batch_size": row["micro_batch_size"], "seq_len": row["seq_len"]}
        if row["lora_rank"]:
            update["lora_rank"] = row["lora_rank"]
        expected = plan(model, gpu, run.model_copy(update=update))
        assert row["peak_allocated_bytes"] == expected.peak_allocated_bytes, row
        assert row["required_bytes"] == expected.required_bytes, row
        assert row["headroom_bytes"] == expected.headroom_bytes, row
        assert row["fits"] == expected.fits, row


def test_sweep_grid_has_every_combination_and_rank_only_for_lora_methods():
    model, gpu, run = get_model("8b"), get_gpu("a10g"), make_run()
    result = sweep(model, gpu, run, batch=[1, 2, 4, 8], seq=[512, 1024, 2048], rank=[8, 16],
                   method=["qlora", "lora", "full", "inference"])
    assert tuple(result.columns) == COLUMNS
    assert len(result) == 4 * 3 * 2 * 2 + 4 * 3 * 2
    assert set(result.columns["lora_rank"][result.columns["method"] == "full"]) == {0}
    assert_rows_match_plan(model, gpu, run, result)


@settings(max_examples=20)
@given(model_name=st.sampled_from(MODELS),
       batch=st.lists(st.integers(1, 64), min_size=1, max_size=3),
       seq=st.lists(st.integers(1, 16384), min_size=1, max_size=3),
       rank=st.lists(st.integers(1, 512), min_size=1, max_size=3),
       fields=st.builds(dict, optimizer=st.sampled_from(["adamw", "adamw_8bit", "paged_adamw_8bit", "adafactor"]),
                        attention=st.sampled_from(["sdpa", "eager"]), gradient_checkpointing=st.booleans(),
                        loss_impl=st.sampled_from(["standard", "chunked"]), grad_accum_steps=st.sampled_from([1, 4]),
                        compute_dtype=st.just("fp16")),
       method=st.sampled_from(["qlora", "lora", "full", "inference"]))
def test_vectorized_sweep_equals_the_scalar_plan(model_name, batch, seq, rank, fields, method):
    model, gpu, run = get_model(model_name), get_gpu("a100"), make_run(**fields)
    result = sweep(model, gpu, run, batch=batch, seq=seq, rank=rank, method=[method])
    assert_rows_match_plan(model, gpu, run, result)
    fitting = count_fitting(model, gpu, run.model_copy(update={"method": method}), batch, seq, rank)
    assert fitting == int(result.columns["fits"].sum())


def test_sweep_defaults_to_the_runs_own_sizes():
    model, gpu, run = get_model("13b"), get_gpu("t4"), make_run(micro_batch_size=2, seq_len=1024)
    result = sweep(model, gpu, run)
    assert len(result) == 1
    assert result.records()[0]["required_bytes"] == plan(model, gpu, run).required_bytes


@pytest.mark.parametrize("grid", [{"batch": [0, 1]}, {"seq": []}, {"rank": [-4]}])
def test_sweep_refuses_non_positive_sizes(grid):
    with pytest.raises(InputError):
        sweep(get_model("7b"), get_gpu("t4"), make_run(), **grid)


def test_solver_speed_benchmark_runs_quick(capsys):
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "solver_speed.py"
    spec = importlib.util.spec_from_file_location("solver_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "configs/s" in out and "max_seq_len" in out and "median" in out
