"""The harness runs end to end on CPU (status smoke, nothing measured), builds what the
planner models, and records OOMs, errors and missing optimizers as results."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from validation import harness, results  # noqa: E402
from validation.build import build_model  # noqa: E402
from validation.cases import SMOKE_MODEL, Case, planner_gpu, predict, smoke_cases  # noqa: E402
from vramplan.memory import lora  # noqa: E402
from vramplan.specs import RunConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
MEASURED = [c for c in results.COLUMNS if c.startswith("measured_")]


def _env():
    return results.environment("cpu")


def test_every_smoke_case_runs_end_to_end_on_cpu_and_claims_no_memory(tmp_path):
    out = tmp_path / "smoke.csv"
    env = _env()
    for case in smoke_cases():
        row = harness.run_case(case, CPU, env)
        assert row["status"] == "smoke", (case.case_id, row.get("error"))
        assert all(row.get(column) is None for column in MEASURED), case.case_id
        assert row["predicted_peak_bytes"] > 0 and row["predicted_load_bytes"] > 0
        results.append_row(out, row)
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == [c.case_id for c in smoke_cases()]
    assert {r["status"] for r in rows} == {"smoke"}
    assert all(r["measured_peak_bytes"] == "" for r in rows)
    assert rows[0]["device_name"] == "cpu"


def _tensor_bytes(model) -> int:
    """Bytes of every distinct parameter and buffer except the rotary tables (the planner
    leaves those few KiB out)."""
    tensors = {id(t): t for name, t in (*model.named_parameters(), *model.named_buffers()) if "rotary" not in name}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("case", smoke_cases(), ids=lambda c: c.case_id)
def test_built_model_holds_what_the_planner_counts(case):
    gpu = planner_gpu(case)
    model = build_model(case.model_spec(), case.run, gpu, CPU)
    held = _tensor_bytes(model)
    predicted = predict(case, gpu).phase_bytes["load"]
    tensors = sum(1 for _ in model.parameters()) + sum(1 for _ in model.buffers())
    # The planner rounds each tensor up to the CUDA allocator's 512-byte blocks; CPU does not.
    assert held <= predicted <= held + 512 * tensors, (held, predicted)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if case.run.uses_lora:
        assert trainable == lora.lora_parameter_count(SMOKE_MODEL, case.run.lora_targets, case.run.lora_rank)
    elif case.run.method == "full":
        assert trainable == sum(p.numel() for p in model.parameters())
    else:
        assert trainable == 0


def test_qlora_build_quantizes_every_decoder_linear_and_keeps_lm_head_float():
    from vramplan.torch_nf4.linear import NF4Linear

    case = smoke_cases()[0]
    model = build_model(case.model_spec(), case.run, planner_gpu(case), CPU)
    quantized = [m for m in model.modules() if isinstance(m, NF4Linear)]
    assert len(quantized) == 7 * SMOKE_MODEL.num_hidden_layers
    assert all(m.lora_rank == case.run.lora_rank for m in quantized)
    assert model.get_output_embeddings().weight.dtype == torch.float32  # k-bit prep
    assert model.is_gradient_checkpointing


def test_out_of_memory_is_a_result_not_a_crash(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(harness, "_execute", out_of_memory)
    row = harness.run_case(smoke_cases()[0], CPU, _env())
    assert row["status"] == "oom"
    assert "out of memory" in row["error"]
    assert row["predicted_fits"] is True


TINY_ARCHITECTURES = {
    "mistral": {},
    "qwen2": {"attention_bias": True},
    "gemma2": {"norms_per_layer": 4, "final_logit_softcapping": True, "tie_word_embeddings": True},
}


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_every_matrix_architecture_builds_and_trains_at_tiny_size(architecture):
    spec = SMOKE_MODEL.model_copy(update={"architecture": architecture, "name": f"tiny-{architecture}",
                                          **TINY_ARCHITECTURES[architecture]})
    run = RunConfig(method="qlora", compute_dtype="bf16", seq_len=16, lora_rank=4, attention="eager")
    row = harness.run_case(Case(f"tiny-{architecture}", spec.name, run, spec=spec, warmup_steps=1,
                                measured_steps=1), CPU, _env())
    assert row["status"] == "smoke", row["error"]
    model = build_model(spec, run, planner_gpu(Case("x", spec.name, run, spec=spec)), CPU)
    assert _tensor_bytes(model) <= predict(Case("x", spec.name, run, spec=spec)).phase_bytes["load"]
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == spec.tie_word_embeddings


def test_a_case_the_harness_cannot_build_is_recorded_as_error():
    gemma_like = SMOKE_MODEL.model_copy(update={"architecture": "gemma2", "name": "tiny-gemma2",
                                                "norms_per_layer": 4, "final_logit_softcapping": True})
    case = Case("gemma-sdpa", gemma_like.name, RunConfig(method="inference", compute_dtype="bf16",
                                                         seq_len=16, max_new_tokens=2, attention="sdpa"),
                spec=gemma_like, warmup_steps=1, measured_steps=1)
    row = harness.run_case(case, CPU, _env())
    if row["status"] == "smoke":
        pytest.skip("this transformers runs Gemma-2 with SDPA")
    assert row["status"] == "error"
    assert row["error"].startswith("ValueError") and "Traceback" not in row["error"]


def test_bitsandbytes_optimizers_are_not_measured_without_bitsandbytes(monkeypatch):
    monkeypatch.setattr(harness, "bitsandbytes_missing", lambda: "bitsandbytes not importable (test)")
    case = Case("paged", SMOKE_MODEL.name, RunConfig(method="qlora", optimizer="paged_adamw_8bit",
                                                     compute_dtype="bf16", seq_len=16), spec=SMOKE_MODEL)
    row = harness.run_case(case, CPU, _env())
    assert row["status"] == "not_measured"
    assert "bitsandbytes" in row["error"]
    assert row["predicted_peak_bytes"] > 0


def test_append_refuses_a_file_with_other_columns(tmp_path):
    from vramplan.errors import InputError

    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="other columns"):
        results.append_row(other, {"case_id": "x", "status": "ok"})


@pytest.mark.slow
def test_run_matrix_script_smoke_writes_rows(tmp_path):
    out = tmp_path / "rows.csv"
    done = subprocess.run(
        [sys.executable, str(ROOT / "validation" / "run_matrix.py"), "--smoke", "--only", "smoke-inference",
         "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "smoke-inference" in done.stdout and "done: 2 case(s)" in done.stdout
    with out.open(newline="") as handle:
        assert [r["status"] for r in csv.DictReader(handle)] == ["smoke", "smoke"]


def test_run_matrix_refuses_without_cuda_unless_smoke():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, str(ROOT / "validation" / "run_matrix.py"), "--only", "llama32-1b-full"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--smoke" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.cuda
def test_one_small_case_is_measured_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    case = Case("cuda-qlora", SMOKE_MODEL.name, RunConfig(method="qlora", compute_dtype="bf16", seq_len=64,
                                                          micro_batch_size=2), spec=SMOKE_MODEL)
    row = harness.run_case(case, "cuda")
    assert row["status"] == "ok", row.get("error")
    assert row["measured_peak_bytes"] > 0
    assert row["measured_peak_reserved_bytes"] >= row["measured_peak_bytes"]
    assert row["measured_forward_active_bytes"] > 0
