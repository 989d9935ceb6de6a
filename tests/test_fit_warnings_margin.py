"""`fit` warnings, --margin, Apple-silicon verdicts, --simulate --json, Breakdown repr and
one "largest that fits" across views (issue 13, items 3, 15, 16, 17)."""
from __future__ import annotations

import json

import pytest

from vramplan import estimate, solvers
from vramplan.cli.main import main
from vramplan.errors import InputError


def fit_json(capsys, *words):
    code = main(["fit", *words, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_context_window_exceeded_is_a_warning(capsys):
    code, data = fit_json(capsys, "--model", "13b", "--gpu", "h100", "--seq", "8192")
    assert any("context window of 4096" in warning for warning in data["warnings"])
    assert not estimate("13b", "h100", seq_len=4096).warnings


@pytest.mark.parametrize("gpu, warned", [("t4", True), ("v100-16g", True), ("a10g", False), ("h100", False)])
def test_flash_attention_2_on_a_gpu_that_cannot_run_it_is_a_warning(gpu, warned):
    result = estimate("7b", gpu, attention="flash_attention_2", compute_dtype="fp16")
    assert any("flash_attention_2" in warning for warning in result.warnings) == warned


def test_headroom_under_five_percent_is_a_warning():
    tight = estimate("13b", "t4", lora_rank=85)  # 0.07 GiB of 14.75 to spare
    assert tight.fits and any("under 5% of capacity" in warning for warning in tight.warnings)
    assert not any("under 5%" in warning for warning in estimate("13b", "t4").warnings)


def test_warnings_are_printed_by_fit(capsys):
    main(["fit", "--model", "13b", "--gpu", "t4", "--rank", "85"])
    assert "warning: headroom 0.07 GiB is under 5% of capacity" in capsys.readouterr().out


def test_margin_keeps_room_free_in_fit_and_max(capsys):
    plain = estimate("13b", "t4")
    code, data = fit_json(capsys, "--model", "13b", "--gpu", "t4", "--margin", "5GiB")
    assert (code, data["fits"], data["margin_bytes"]) == (1, False, 5 * 2**30)
    assert data["headroom_bytes"] == plain.headroom_bytes - 5 * 2**30
    main(["max", "rank", "--model", "13b", "--gpu", "t4", "--margin", "1GiB", "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert answer["value"] == solvers.max_lora_rank("13b", "t4", margin_bytes=2**30) < solvers.max_lora_rank("13b", "t4")
    assert answer["headroom_bytes"] >= 0 and answer["margin_bytes"] == 2**30


def test_margin_library_keyword_takes_sizes_and_bytes():
    assert estimate("13b", "t4", margin="1GiB").margin_bytes == 2**30
    assert estimate("13b", "t4", margin=1000).margin_bytes == 1000
    with pytest.raises(InputError, match="margin"):
        estimate("13b", "t4", margin="lots")


def test_bad_margin_is_a_one_line_error_exit_2(capsys):
    assert main(["fit", "--margin=-3GiB"]) == 2
    assert "margin" in capsys.readouterr().err


@pytest.mark.parametrize("gpu", ["m2-max-96g", "m3-max-128g"])
def test_apple_silicon_says_bitsandbytes_is_not_available_not_fits(capsys, gpu):
    assert main(["fit", "--model", "7b", "--gpu", gpu]) == 1
    out = capsys.readouterr().out
    assert "CANNOT RUN HERE: bitsandbytes" in out and "FITS" not in out.replace("CANNOT RUN HERE", "")
    lora = estimate("7b", gpu, method="lora")
    assert lora.fits and not lora.blocked_by


def test_breakdown_repr_is_one_short_line():
    text = repr(estimate("13b", "t4"))
    assert text.startswith("Breakdown(llama-2-13b on Tesla T4, qlora: fits, peak 9.01 GiB")
    assert "\n" not in text and len(text) < 160
    assert estimate.__doc__ and solvers.max_lora_rank.__doc__ and type(estimate("13b", "t4")).__doc__


def test_room_to_spare_says_when_it_rounds(capsys):
    main(["fit", "--model", "13b", "--gpu", "t4"])
    out = capsys.readouterr().out
    assert "LoRA rank up to 64 (power of two; exact maximum 85)" in out
    assert "sequences up to 4096 tokens (the model's context window; exact maximum 4301)" in out


def test_simulate_json_carries_the_simulation(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    code, data = fit_json(capsys, "--model", "qwen2.5-0.5b", "--gpu", "a10g", "--seq", "128", "--simulate")
    simulation = data["simulation"]
    assert simulation["peak_bytes"] > 0 and simulation["peak_phase"] in simulation["phase_peaks"]
    assert simulation["categories_at_peak"] == simulation["phase_categories"][simulation["peak_phase"]]


def test_report_figure_and_verdict_agree_on_the_longest_sequence():
    from vramplan.catalog import get_model
    from vramplan.estimate import make_run
    from vramplan.gpus import get_gpu
    from vramplan.plots.seq_components import seq_components, seq_grid

    model, gpu, run = get_model("13b"), get_gpu("t4"), make_run(seq_len=4096)
    data = seq_components(model, gpu, run, seq_grid(128, 8192, 48))  # the report's figure data
    assert estimate("13b", "t4", seq_len=4096).fits
    assert data.max_seq_len == solvers.max_seq_len(model, gpu, run) == 4301
