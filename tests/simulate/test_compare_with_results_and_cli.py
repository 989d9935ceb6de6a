"""compare_with_results on a synthetic results CSV, and `vramplan fit --simulate`."""
import csv

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramplan.cli.main import main  # noqa: E402
from vramplan.simulate import compare_with_results  # noqa: E402


def test_compare_with_results_puts_simulated_next_to_analytic(tmp_path):
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["model", "gpu", "method", "seq_len", "gradient_checkpointing",
                                         "moe_experts", "measured_peak_bytes"])
        writer.writeheader()
        writer.writerow(dict(model="tinyllama-1.1b", gpu="h100", method="qlora", seq_len=256,
                             gradient_checkpointing="true", measured_peak_bytes=1_500_000_000))
        writer.writerow(dict(model="mixtral-8x7b", gpu="h100", method="qlora", seq_len=128,
                             gradient_checkpointing="true", moe_experts="linear", measured_peak_bytes=30_000_000_000))
        writer.writerow(dict(model="tinyllama-1.1b", gpu="h100", method="qlora", seq_len=256,
                             gradient_checkpointing="true", measured_peak_bytes=""))  # no measurement: skipped
    rows = compare_with_results(path)
    assert len(rows) == 2
    tiny, mixtral = rows
    assert tiny["simulated"] > 0 and tiny["analytic"] > 0
    assert tiny["simulated_error"] == pytest.approx((tiny["simulated"] - 1_500_000_000) / 1_500_000_000)
    assert abs(tiny["analytic"] - tiny["simulated"]) < 0.03 * tiny["simulated"]
    assert mixtral["simulated"] is None and "fused MoE experts only" in mixtral["skipped"]


def test_fit_simulate_prints_simulated_peak_beside_the_plan(capsys):
    code = main(["fit", "--model", "tinyllama-1.1b", "--gpu", "h100", "--seq", "256", "--simulate"])
    out = capsys.readouterr().out
    assert code == 0
    assert "simulated peak" in out and "live at the simulated peak" in out and "analytic GiB" in out


def test_fit_simulate_refuses_what_it_cannot_run_with_an_input_error(capsys):
    code = main(["fit", "--model", "mixtral-8x7b", "--gpu", "h100", "--moe-experts", "linear", "--simulate"])
    assert code == 2
    assert "error: moe_experts" in capsys.readouterr().err
