"""`vramplan validate report` over a SYNTHETIC results file (tests/validation/data/, never
validation/results/): the error tables, the verdict table, layer scaling, worst cases."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from validation import report, results
from vramplan.cli.main import main

DATA = Path(__file__).resolve().parent / "data" / "SYNTHETIC-results.csv"


def _rows():
    return results.read_rows([DATA])


def test_synthetic_file_is_marked_and_has_the_harness_columns():
    with DATA.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == results.COLUMNS
        assert {row["device_name"] for row in reader} == {"SYNTHETIC (not measured)"}


def test_peak_error_tables_per_method_and_architecture():
    summary = report.summarize(_rows())
    groups = {(g[0], g[1]): g[2:] for g in summary.groups}
    # qlora/llama: +6.7, +7.5, +12.0 (predicted over measured)
    assert groups[("qlora", "llama")] == ["3", "7.5", "12.0", "+7.5"]
    assert groups[("qlora", "mistral")] == ["1", "10.0", "10.0", "-10.0"]
    assert groups[("inference", "llama")] == ["1", "0.0", "0.0", "+0.0"]
    assert summary.overall == ["all", "", "7", "7.5", "12.0", "+6.7"]
    assert summary.counts == {"ok": 7, "oom": 1, "not_measured": 1, "error": 1}


def test_verdict_agreement_counts_fits_against_oom():
    verdict = report.summarize(_rows()).verdict
    assert verdict == {"fits_ran": 6, "fits_oom": 0, "nofit_oom": 1, "nofit_ran": 1}


def test_layer_scaling_compares_per_layer_and_fixed_terms():
    scaling = report.summarize(_rows()).scaling
    assert scaling == [["qlora-llama", "4/8", "0.500", "0.550", "+10.0", "4.00", "4.20"]]


def test_worst_cases_are_ranked_by_absolute_error():
    worst = report.summarize(_rows(), worst=3).worst
    assert [w[0] for w in worst][0] == "cap-nofit-ran"
    assert {w[0] for w in worst[1:]} == {"qlora-mistral", "full-llama"}


def test_text_and_markdown_renderings_carry_the_tables():
    summary = report.summarize(_rows())
    text = report.render_text(summary)
    assert "verdict agreement: 7/8" in text and "worst cases:" in text and "layer-count scaling" in text
    markdown = report.render_markdown(summary)
    assert "| method | architecture | runs |" in markdown
    assert "| does not fit | 1 | 1 |" in markdown


def test_validate_report_command_prints_markdown(capsys):
    assert main(["validate", "report", str(DATA), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("runs: ") and "SYNTHETIC-results.csv" in out and "| qlora | llama | 3 |" in out


def test_validate_report_on_a_missing_path_is_a_one_line_error():
    done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "validate", "report", "no/such.csv"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: paths: no such file") and "Traceback" not in done.stderr


def test_validate_command_module_imports_no_torch():
    probe = ("import sys; from vramplan.cli.main import main; "
             f"main(['validate', 'report', {str(DATA)!r}]); "
             "print('LOADED', [m for m in ('torch', 'transformers', 'pandas') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


def test_recorded_results_are_real_measurements_only():
    """validation/results/ holds rows measured on a GPU: no smoke, CPU or synthetic rows."""
    files = sorted(results.RESULTS_DIR.glob("*"))
    if not [f for f in files if f.suffix == ".csv"]:
        pytest.skip("no results recorded yet")
    for row in results.read_rows([results.RESULTS_DIR]):
        assert row["status"] in ("ok", "oom", "error", "not_measured"), row["source"]
        assert row["device_name"] not in ("", "cpu") and "SYNTHETIC" not in row["device_name"].upper()
        assert int(row["device_total_bytes"]) > 0


def test_report_puts_the_simulator_next_to_the_analytic_model(tmp_path, capsys):
    pytest.importorskip("torch")
    from vramplan.estimate import plan
    from vramplan.simulate import compare_with_results, simulate

    # two harness rows (a 4-layer QLoRA Llama and a LoRA Qwen2) are enough to exercise the path
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if row["case_id"] in ("qlora-llama-L4",) or row["method"] == "lora"][:2]
    small = tmp_path / "SYNTHETIC-two-rows.csv"
    with small.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=results.COLUMNS)
        writer.writeheader()
        writer.writerows(kept)

    compared = compare_with_results(small)
    assert len(compared) == 2
    first = compared[0]
    case_model = first["model"]
    assert case_model == "llama-2-7b" and first["method"] == "qlora"
    # the 4-layer override from config_json is applied to both engines
    from vramplan.catalog import get_model
    from vramplan.estimate import make_run
    from vramplan.gpus import get_gpu

    four_layers = get_model("7b").model_copy(update={"num_hidden_layers": 4})
    run = make_run(method="qlora", seq_len=1024, lora_rank=16)
    assert first["analytic"] == plan(four_layers, get_gpu("h100-sxm"), run).peak_allocated_bytes
    assert first["simulated"] == simulate(four_layers, get_gpu("h100-sxm"), run).peak_bytes

    table_rows = report.simulator_rows(compared)
    assert [row[:3] for row in table_rows] == [["lora", "qwen2", "1"], ["qlora", "llama", "1"]]

    assert main(["validate", "report", str(small), "--simulate"]) == 0
    out = capsys.readouterr().out
    assert "simulator vs measured, next to analytic vs measured" in out
