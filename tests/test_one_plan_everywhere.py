"""Every entry point plans a pre-quantized local checkpoint in its stored format (issue 13, item 1).

A folder with Llama-3.1-8B shapes stored as GPTQ-4bit, on a 12027 MiB GPU at seq 1024, sits
just over the line (needs ~11.76 of 11.75 GiB): planned as NF4 (what a caller that forgot the
model got) it is a different number, so any entry point that resolves its own dtypes shows up.
"""
from __future__ import annotations

import json
import struct

import pytest

from vramplan.cli.main import main
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model

LLAMA_31_8B_GPTQ = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "torch_dtype": "float16",
    "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False},
}
GPU = "12027MiB"
SEQ = 1024


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama31-8b-gptq")
    (path / "config.json").write_text(json.dumps(LLAMA_31_8B_GPTQ))
    # a safetensors header for the unquantized embedding; the data is a sparse hole, never read
    header = {"model.embed_tokens.weight": {"dtype": "F16", "shape": [128256, 4096],
                                            "data_offsets": [0, 128256 * 4096 * 2]}}
    text = json.dumps(header).encode()
    with open(path / "model.safetensors", "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        handle.truncate(8 + len(text) + 128256 * 4096 * 2)
    return path


@pytest.fixture(scope="module")
def specs(folder):
    return resolve_model(str(folder)), get_gpu(GPU), make_run(seq_len=SEQ)


@pytest.fixture(scope="module")
def reference(specs):
    breakdown = plan(*specs)
    assert breakdown.weight_format == "gptq-4bit"
    return breakdown


def _cli_json(capsys, *words):
    code = main(list(words))
    return code, json.loads(capsys.readouterr().out)


def test_the_case_sits_on_the_line_and_nf4_would_plan_it_differently(specs, reference):
    model, gpu, run = specs
    nf4 = plan(model, gpu, run.model_copy(update={"weight_format": "nf4"}))
    assert not reference.fits and abs(reference.headroom_bytes) < 0.05 * 2**30
    assert nf4.peak_allocated_bytes != reference.peak_allocated_bytes


def test_fit_cli_plans_the_stored_format(capsys, folder, reference):
    code, data = _cli_json(capsys, "fit", "--model", str(folder), "--gpu", GPU, "--seq", str(SEQ), "--json")
    assert (code, data["weight_format"], data["peak_allocated_bytes"], data["fits"]) == \
        (1, "gptq-4bit", reference.peak_allocated_bytes, reference.fits)


@pytest.mark.parametrize("dimension, field", [("batch", "micro_batch_size"), ("seq", "seq_len"),
                                              ("rank", "lora_rank")])
def test_max_agrees_with_the_verdict(capsys, folder, specs, reference, dimension, field):
    code, data = _cli_json(capsys, "max", dimension, "--model", str(folder), "--gpu", GPU, "--seq", str(SEQ), "--json")
    current = getattr(specs[2], field)
    assert (data["value"] >= current) == reference.fits
    assert data["value"] < current  # it does not fit, so the largest that fits is below the run's value
    if data["value"]:
        assert data["headroom_bytes"] >= 0


def test_solvers_agree_with_the_verdict(specs, reference):
    from vramplan import solvers

    model, gpu, run = specs
    assert solvers.max_micro_batch(model, gpu, run) == 0
    assert solvers.max_seq_len(model, gpu, run) < SEQ
    assert solvers.max_lora_rank(model, gpu, run) < run.lora_rank


def test_compare_row_matches_fit(specs, reference):
    from vramplan.cli.compare import compare_row

    row = compare_row("x", *specs)
    assert (row["peak_allocated_bytes"], row["verdict"], row["max_micro_batch"]) == \
        (reference.peak_allocated_bytes, "DOES NOT FIT", 0)


def test_sweep_matches_fit(capsys, folder, specs, reference):
    from vramplan.sweep import sweep

    row = sweep(*specs, batch=[1], seq=[SEQ], rank=[16]).records()[0]
    assert (row["peak_allocated_bytes"], row["fits"]) == (reference.peak_allocated_bytes, reference.fits)
    code, data = _cli_json(capsys, "sweep", "--model", str(folder), "--gpu", GPU, "--seq", str(SEQ),
                           "--method", "qlora", "--json")
    assert [(r["peak_allocated_bytes"], r["fits"]) for r in data["rows"]] == \
        [(reference.peak_allocated_bytes, reference.fits)]


def test_explain_uses_the_stored_format(specs, reference):
    from vramplan.present import component_terms

    rows = {row["component"]: row for row in component_terms(specs[1], specs[2], reference)}
    text = json.dumps(rows["quantized_weights"])
    assert "nf4" not in text.lower() and "ceil(n/2)" not in text


def test_plot_data_matches_fit(specs, reference):
    from vramplan.plots.seq_components import seq_components

    data = seq_components(*specs, [SEQ])
    assert int(data.required_bytes[0]) == reference.required_bytes
    assert data.max_seq_len < SEQ


def test_report_verdict_and_figure_agree(specs, reference):
    pytest.importorskip("matplotlib")
    from vramplan.report import report_blocks

    title, blocks = report_blocks(*specs)
    assert title.endswith("DOES NOT FIT")
    assert f"{reference.required_bytes / 2**30:.2f}" in blocks[0].text


def test_tui_state_matches_fit(folder, reference):
    from vramplan.tui.state import WhatIf, largest_that_fit

    state = WhatIf(str(folder), GPU, make_run(seq_len=SEQ))
    assert (state.breakdown.peak_allocated_bytes, state.breakdown.fits) == \
        (reference.peak_allocated_bytes, reference.fits)
    assert largest_that_fit(state.model, state.gpu, state.run)["micro-batch"] == 0


def test_simulator_plans_the_stored_format(specs):
    pytest.importorskip("torch")
    from vramplan.errors import InputError
    from vramplan.simulate.engine import simulate

    with pytest.raises(InputError, match="gptq-4bit"):  # not silently simulated as nf4
        simulate(*specs)


def test_validation_case_plans_the_stored_format(specs, reference):
    pytest.importorskip("torch")
    import torch

    from validation.build import UnsupportedCase, build_model
    from validation.cases import Case, predict

    model, gpu, run = specs
    case = Case(case_id="gptq", model=model.name, spec=model, run=run)
    assert (predict(case, gpu).peak_bytes, predict(case, gpu).fits) == (reference.peak_allocated_bytes, reference.fits)
    with pytest.raises(UnsupportedCase, match="gptq-4bit"):
        build_model(model, run, gpu, torch.device("meta"))


def test_report_lists_the_plans_own_terms(specs, reference):
    pytest.importorskip("matplotlib")
    from collections import Counter

    from vramplan.report import report_blocks

    _title, blocks = report_blocks(*specs)
    index = [block.text for block in blocks].index("How each component is computed")
    rows = blocks[index + 1].rows
    planned = [(item["name"], item["bytes"]) for items in reference.terms.values() for item in items if item["bytes"]]
    shown = Counter((name, int(nbytes.replace(",", ""))) for _label, name, _f, _n, nbytes in rows)
    assert not Counter(planned) - shown  # every term of the plan, with its bytes
    assert sum(shown.values()) == len(planned) + 2  # plus the allocator reserve and the CUDA context
