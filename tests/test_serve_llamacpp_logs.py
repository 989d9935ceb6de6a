"""The committed llama.cpp log excerpts (validation/llamacpp/logs, written by benchmarks/llamacpp_agreement.py
from real llama.cpp loads) are reproduced by the plan: weights, KV cache and output buffers at the log's
0.01 MiB, KV cells and layers exactly, the weight bytes exactly; the compute estimate within its stated band."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from llamacpp_agreement import compare, parse_log, plan_case, settings_of  # noqa: E402
from llamacpp_tiny_gguf import TinyModel  # noqa: E402

RESULTS = ROOT / "validation" / "llamacpp" / "agreement.json"
CASES = json.loads(RESULTS.read_text(encoding="utf-8"))["cases"]
COMPUTE_BAND = (0.25, 2.0)  # plan / llama.cpp for the compute-buffer estimate (README says how close each case is)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_plan_reproduces_the_llama_cpp_log(case):
    lines = (ROOT / "validation" / "llamacpp" / "logs" / f"{case['case']}.log").read_text(encoding="utf-8").splitlines()
    parsed = parse_log(lines)
    assert parsed["model_mib"] and parsed["kv_mib"] and parsed["kv_caches"], "excerpt lacks the buffer lines"
    result = compare(parsed, plan_case(TinyModel(**case["model"]), settings_of(case["settings"])))
    assert result["model_size_exact"]
    assert result["model_buffer"]["agree"], result["model_buffer"]
    assert result["kv_buffer"]["agree"], result["kv_buffer"]
    assert result["kv_caches"]["agree"], result["kv_caches"]
    assert result["output_buffer"]["agree"], result["output_buffer"]
    low, high = COMPUTE_BAND
    assert low <= result["compute_buffer"]["plan_over_log"] <= high, result["compute_buffer"]


def test_the_log_parser_reads_each_line_kind():
    lines = [
        "load_tensors:   CPU_Mapped model buffer size =     4.06 MiB",
        "llama_context:        CPU  output buffer size =     0.00 MiB",
        "llama_kv_cache:        CPU KV buffer size =     2.00 MiB",
        "llama_kv_cache: size =    2.00 MiB (   512 cells,   4 layers,  1/1 seqs), K (f16):    1.00 MiB, V (f16):    1.00 MiB",
        "sched_reserve:        CPU compute buffer size =    16.51 MiB",
        "llama_model_size_bytes = 4194304",
    ]
    parsed = parse_log(lines)
    assert parsed["model_mib"] == {"CPU_Mapped": 4.06} and parsed["compute_mib"] == {"CPU": 16.51}
    assert parsed["kv_caches"] == [{"mib": 2.0, "cells": 512, "layers": 4, "seqs": 1, "streams": 1, "type_k": "f16",
                                    "k_mib": 1.0, "type_v": "f16", "v_mib": 1.0}]
    assert parsed["model_size_bytes"] == 4194304
