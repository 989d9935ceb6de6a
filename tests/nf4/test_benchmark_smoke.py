import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the NF4 extra needs torch")
pytest.importorskip("triton", reason="the benchmark runs the Triton kernel")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "nf4_dequant.py"


def test_benchmark_smoke_mode_runs_on_cpu_and_writes_json(tmp_path):
    out = tmp_path / "nf4_dequant.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GB/s" in done.stdout
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke" and result["environment"]["triton_interpret"] == "1"
    assert {"torch", "triton", "bitsandbytes", "date", "device"} <= result["environment"].keys()
    assert result["rows"] and all(row["bit_exact_vs_torch_reference"] and row["gb_per_s"] > 0 for row in result["rows"])
