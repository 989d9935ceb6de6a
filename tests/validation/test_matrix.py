"""The validation matrix is data the planner can plan, sized for one 80 GB H100."""
from __future__ import annotations

import pytest

from validation import cases as case_data
from validation.cases import MATRIX_PATH, load_matrix, planner_gpu, predict, select
from vramplan.errors import InputError
from vramplan.memory.parameters import parameter_count

CASES = load_matrix()
REQUIRED_MODELS = {"llama-2-7b", "llama-3.1-8b", "mistral-7b-v0.1", "qwen2.5-7b", "gemma-2-9b"}
H100_TOTAL = 81089 * 2**20  # torch's total_memory on an H100 80GB HBM3
H200_TOTAL = 143771 * 2**20  # nvidia-smi's total on the lent H200 (device README)
CARDS = (40 * 2**30, H100_TOTAL, H200_TOTAL)


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
        if case.memory_cap_bytes is None:
            assert prediction.fits, case.case_id


def test_capped_cases_test_both_verdicts_on_every_card():
    capped = [case for case in CASES if case.memory_cap_bytes is not None]
    for total in CARDS:
        verdicts = [predict(case, planner_gpu(case, total)).fits for case in capped]
        assert sorted(set(verdicts)) == [False, True]
        assert verdicts.count(False) >= 3, total


@pytest.mark.parametrize("case", [c for c in CASES if c.case_id.startswith("cap-")], ids=lambda c: c.case_id)
def test_every_cap_is_fixed_bytes_and_the_verdict_is_unambiguous_on_any_card(case):
    """A cap is the same bytes on a 40 GB card, an H100 or a 139 GiB H200, and the planner's
    required bytes are at least 10% from it (0.9x or 1.1x), so the verdict check cannot flip."""
    ratios = set()
    for total in CARDS:
        prediction = predict(case, planner_gpu(case, total))
        assert prediction.capacity_bytes == case.memory_cap_bytes + planner_gpu(case).cuda_context_bytes
        ratios.add(prediction.required_over_capacity)
        # the cap the harness enforces is the same bytes on every card
        assert case_data.memory_fraction(case.memory_cap_bytes, total) * total == pytest.approx(case.memory_cap_bytes)
    (ratio,) = ratios
    assert ratio <= 1 - case_data.CAP_MARGIN or ratio >= 1 + case_data.CAP_MARGIN, ratio
    expected = "fits" if case.case_id.endswith("-fits") else "nofit"
    assert ("fits" if ratio <= 1 else "nofit") == expected, case.case_id


def test_a_cap_larger_than_the_card_is_refused():
    with pytest.raises(InputError, match="memory_cap_mib"):
        case_data.memory_fraction(50 * 2**30, 40 * 2**30)


def test_run_order_is_one_case_per_architecture_and_method_then_caps_then_variants():
    ordered = case_data.run_order(CASES)
    assert sorted(c.case_id for c in ordered) == sorted(c.case_id for c in CASES)
    kinds = {(c.model_spec().architecture, c.run.method) for c in CASES if c.memory_cap_bytes is None}
    leading, rest = ordered[:len(kinds)], ordered[len(kinds):]
    assert {(c.model_spec().architecture, c.run.method) for c in leading} == kinds
    assert all(c.memory_cap_bytes is None for c in leading)
    capped = [c for c in CASES if c.memory_cap_bytes is not None]
    assert rest[:len(capped)] == capped
    assert all(c.memory_cap_bytes is None for c in rest[len(capped):])


def test_list_prints_the_cases_in_the_order_they_run():
    from validation.runner import list_cases, parse_args, selected_cases

    chosen = selected_cases(parse_args([]))
    assert [c.case_id for c in chosen] == [c.case_id for c in case_data.run_order(CASES)]
    lines = []
    list_cases(chosen[:13], lines.append)
    assert [line.split()[1] for line in lines] == [c.case_id for c in chosen[:13]]
    assert "cap  8.00 GiB + context: needs 1.37x does not fit" in lines[11]


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
    fraction = tmp_path / "f.toml"  # the old card-dependent key
    fraction.write_text('[[case]]\nid = "x"\nmodel = "llama-2-7b"\nmemory_fraction = 0.1\n')
    with pytest.raises(InputError, match="memory_fraction"):
        load_matrix(fraction)
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
