"""The validation matrix is data the planner can plan, sized for one 80 GB H100."""
from __future__ import annotations

import pytest

from validation.cases import MATRIX_PATH, load_matrix, planner_gpu, predict, select
from vramplan.errors import InputError
from vramplan.memory.parameters import parameter_count

CASES = load_matrix()
REQUIRED_MODELS = {"llama-2-7b", "llama-3.1-8b", "mistral-7b-v0.1", "qwen2.5-7b", "gemma-2-9b"}
H100_TOTAL = 81089 * 2**20  # torch's total_memory on an H100 80GB HBM3


def test_matrix_has_at_least_40_runs_over_at_least_5_models():
    assert len(CASES) >= 40
    models = {case.model for case in CASES}
    assert len(models) >= 5
    assert REQUIRED_MODELS <= models
    small = {case.model for case in CASES
             if case.layers is None and 1e9 <= parameter_count(case.model_spec()) <= 3.5e9}
    assert small, "a 1B-3B model runs whole"


def test_matrix_spans_the_required_ranges():
    runs = [case.run for case in CASES]
    assert min(r.seq_len for r in runs) == 256 and max(r.seq_len for r in runs) == 8192
    assert min(r.micro_batch_size for r in runs) == 1 and max(r.micro_batch_size for r in runs) == 16
    lora_ranks = [r.lora_rank for r in runs if r.uses_lora]
    assert min(lora_ranks) == 8 and max(lora_ranks) == 128
    assert {r.gradient_checkpointing for r in runs if r.trains} == {True, False}
    assert {"sdpa", "eager"} <= {r.attention for r in runs}
    assert {"qlora", "lora", "full", "inference"} == {r.method for r in runs}
    assert all(256 <= r.seq_len <= 8192 and 1 <= r.micro_batch_size <= 16 for r in runs)


def test_every_case_is_planned_and_the_uncapped_ones_fit_an_h100():
    for case in CASES:
        prediction = predict(case, planner_gpu(case, H100_TOTAL))
        assert prediction.peak_bytes > 0
        assert prediction.phase_bytes["load"] > 0
        if case.memory_fraction is None:
            assert prediction.fits, case.case_id


def test_capped_cases_test_both_verdicts():
    capped = [case for case in CASES if case.memory_fraction is not None]
    verdicts = {predict(case, planner_gpu(case, H100_TOTAL)).fits for case in capped}
    assert verdicts == {True, False}


def test_large_models_run_with_few_layers_and_full_finetuning_only_on_small_models():
    for case in CASES:
        params = parameter_count(case.model_spec())
        if case.layers is None:
            assert params < 3.5e9, case.case_id
        if case.run.method == "full":
            assert params < 3.5e9, case.case_id
    assert max(case.layers or 0 for case in CASES) <= 8


def test_layer_pairs_each_get_their_own_prediction():
    pairs = {}
    for case in CASES:
        if case.case_id.endswith(("-L4", "-L8")):
            pairs.setdefault(case.case_id[:-3], {})[case.layers] = case
    full_pairs = [p for p in pairs.values() if set(p) == {4, 8}]
    assert len(full_pairs) >= 10
    for pair in full_pairs:
        assert pair[4].model_spec().num_hidden_layers == 4
        assert pair[8].model_spec().num_hidden_layers == 8
        assert predict(pair[8]).peak_bytes > predict(pair[4]).peak_bytes


def test_only_filters_by_key_value_and_id_substring():
    qlora_llama31 = select(CASES, ["method=qlora", "llama31"])
    assert qlora_llama31 and all(c.run.method == "qlora" and "llama31" in c.case_id for c in qlora_llama31)
    assert all(c.layers == 4 for c in select(CASES, ["layers=4"]))
    with pytest.raises(InputError, match="--only"):
        select(CASES, ["colour=red"])


def test_a_bad_matrix_entry_names_its_case_and_field(tmp_path):
    bad_field = tmp_path / "m.toml"
    bad_field.write_text('[[case]]\nid = "x"\nmodel = "llama-2-7b"\nseq_len = -1\n')
    with pytest.raises(InputError, match="seq_len"):
        load_matrix(bad_field)
    unknown = tmp_path / "u.toml"
    unknown.write_text('[[case]]\nid = "x"\nmodel = "llama-2-7b"\nsequence = 5\n')
    with pytest.raises(InputError, match="sequence"):
        load_matrix(unknown)
    twice = tmp_path / "t.toml"
    twice.write_text('[[case]]\nid = "x"\nmodel = "7b"\n[[case]]\nid = "x"\nmodel = "7b"\n')
    with pytest.raises(InputError, match="twice"):
        load_matrix(twice)


def test_matrix_file_is_the_default():
    assert MATRIX_PATH.name == "matrix.toml" and MATRIX_PATH.parent.name == "validation"
