"""The one GPU call must not be wasted: caps are enforced as fixed bytes, memory the allocator
cannot see is recorded, a CUDA error stops the process and a fresh one resumes where it stopped,
and the session script says plainly when there is no GPU. All on CPU, CUDA faked where needed."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from validation import harness, results, runner  # noqa: E402
from validation.cases import load_matrix, smoke_cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
H200_TOTAL = 143771 * MIB
CONTEXT = 3000  # bytes in use outside the allocator in the fake device below


class FakeCuda:
    """torch.cuda's memory functions as a card with fixed readings (nothing runs on it)."""

    def __init__(self, monkeypatch, total=H200_TOTAL):
        self.total, self.fractions = total, []
        readings = {"memory_allocated": 1000, "memory_reserved": 4096, "max_memory_allocated": 7000,
                    "max_memory_reserved": 8192}
        for name, value in readings.items():
            monkeypatch.setattr(torch.cuda, name, lambda *a, value=value, **k: value)
        for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
            monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
        monkeypatch.setattr(torch.cuda, "memory_stats", lambda *a, **k: {"active_bytes.all.peak": 7100,
                                                                          "active_bytes.all.current": 1000})
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (total - 4096 - CONTEXT, total))
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                            lambda fraction, *a, **k: self.fractions.append(fraction))

        class CudaProbe(harness.Probe):
            def __init__(self, device):
                super().__init__(device)
                self.cuda = True

        monkeypatch.setattr(harness, "Probe", CudaProbe)


def _env(total=None):
    env = results.environment("cpu")
    return {**env, "device_total_bytes": total or ""}


def test_a_cap_is_enforced_as_the_same_bytes_on_any_card(monkeypatch):
    case = next(c for c in load_matrix() if c.case_id.startswith("cap-"))
    for total in (81089 * MIB, H200_TOTAL):
        fake = FakeCuda(monkeypatch, total)
        monkeypatch.setattr(harness, "_execute", lambda *a, **k: None)
        row = harness.run_case(case, "cuda", _env(total))
        assert fake.fractions[0] * total == pytest.approx(case.memory_cap_bytes)
        assert fake.fractions[-1] == 1.0  # released for the next case
        assert row["memory_cap_bytes"] == case.memory_cap_bytes
        assert row["memory_fraction"] == fake.fractions[0]
        assert row["predicted_capacity_bytes"] == case.memory_cap_bytes + 500 * MIB  # the same on both cards


def test_rows_record_leftover_memory_and_memory_outside_the_allocator(monkeypatch):
    FakeCuda(monkeypatch)
    row = harness.run_case(smoke_cases()[0], torch.device("cpu"), _env())
    assert row["status"] == "ok", row["error"]
    assert row["measured_start_allocated_bytes"] == 1000 and row["measured_start_reserved_bytes"] == 4096
    assert row["measured_outside_allocator_start_bytes"] == CONTEXT
    assert row["measured_outside_allocator_peak_bytes"] == CONTEXT
    assert row["measured_paged_bytes"] == 0  # torch AdamW holds no paged buffers
    assert {*results.HELD_COLUMNS, "cuda_context_bytes", "memory_cap_bytes"} <= set(results.COLUMNS)


def test_paged_optimizer_buffers_are_recorded(monkeypatch):
    """bitsandbytes marks its managed-memory buffers `is_paged`; their bytes land in the row."""
    FakeCuda(monkeypatch)
    made = []

    class MarkedAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            loss = super().step(*args, **kwargs)
            for state in self.state.values():
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key].is_paged = True
            return loss

    def make(name, params):
        made.append(MarkedAdamW(params, lr=1e-4))
        return made[-1]

    monkeypatch.setattr(harness, "make_optimizer", make)
    row = harness.run_case(smoke_cases()[0], torch.device("cpu"), _env())
    trainable = sum(p.numel() * 4 for group in made[0].param_groups for p in group["params"])
    assert row["measured_paged_bytes"] == 2 * trainable  # exp_avg + exp_avg_sq, fp32 (step is not paged)


def test_paged_bytes_counts_only_marked_buffers():
    class Optimizer:
        state = {0: {"exp_avg": torch.zeros(10), "step": torch.tensor(1.0), "n": 3}}

    Optimizer.state[0]["exp_avg"].is_paged = True
    assert harness.paged_bytes(Optimizer()) == 40


def test_cuda_errors_are_told_from_out_of_memory():
    assert harness.is_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not harness.is_cuda_error(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not harness.is_cuda_error(ValueError("sdpa is not supported"))


def _cuda_error_on(monkeypatch, case_id: str):
    real = harness._execute

    def execute(case, *args, **kwargs):
        if case.case_id == case_id:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(case, *args, **kwargs)

    monkeypatch.setattr(harness, "_execute", execute)


def _ids(out: Path) -> list[tuple[str, str]]:
    with out.open(newline="") as handle:
        return [(row["case_id"], row["status"]) for row in csv.DictReader(handle)]


def test_a_cuda_error_stops_the_process_and_resume_runs_only_what_is_left(monkeypatch, tmp_path):
    cases, out = smoke_cases()[:4], tmp_path / "rows.csv"
    _cuda_error_on(monkeypatch, cases[1].case_id)
    rows = runner.run_cases(cases, out, "cpu", echo=lambda text: None)
    assert [r["status"] for r in rows] == ["smoke", "cuda_error"]
    assert not runner.running_marker(out).exists()

    monkeypatch.undo()
    rows = runner.run_cases(cases, out, "cpu", echo=lambda text: None, resume=True)
    assert [r["case_id"] for r in rows] == [c.case_id for c in cases[2:]]
    assert _ids(out) == [(cases[0].case_id, "smoke"), (cases[1].case_id, "cuda_error"),
                         (cases[2].case_id, "smoke"), (cases[3].case_id, "smoke")]


def test_run_matrix_exits_3_after_a_cuda_error(monkeypatch, tmp_path):
    _cuda_error_on(monkeypatch, "smoke-qlora")
    args = runner.parse_args(["--smoke", "--only", "smoke-qlora", "--out", str(tmp_path / "r.csv")])
    assert runner.run_from_args(args, lambda text: None) == runner.EXIT_CUDA_ERROR == 3


def test_a_case_whose_process_died_is_recorded_once_and_never_retried(tmp_path):
    cases, out = smoke_cases()[:3], tmp_path / "rows.csv"
    runner.run_cases(cases[:1], out, "cpu", echo=lambda text: None)
    runner.running_marker(out).write_text(cases[1].case_id + "\n")  # as a process killed mid-case leaves it
    said = []
    rows = runner.run_cases(cases, out, "cpu", echo=said.append, resume=True)
    assert [r["case_id"] for r in rows] == [cases[2].case_id]
    died = [row for row in results.read_rows([out]) if row["case_id"] == cases[1].case_id]
    assert len(died) == 1 and died[0]["status"] == "error" and "process ended" in died[0]["error"]
    assert int(died[0]["predicted_peak_bytes"]) > 0
    assert any("not retried" in line for line in said)
    assert not runner.running_marker(out).exists()


def _session(tmp_path, *args, **env):
    return subprocess.run(["bash", str(ROOT / "validation" / "gpu_session.sh"), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OUT": str(tmp_path / "out"), **env})


def test_gpu_session_says_plainly_when_there_is_no_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = _session(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA GPU" in done.stdout and "--smoke" in done.stdout
    assert not (tmp_path / "out" / "matrix_log.txt").exists()


@pytest.mark.slow
def test_gpu_session_smoke_runs_every_step_on_cpu(tmp_path):
    done = _session(tmp_path, "--smoke", SMOKE_ONLY="smoke-inference")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    assert [status for _, status in _ids(out / "smoke.csv")] == ["smoke", "smoke"]
    assert (out / "nf4_dequant.json").exists() and (out / "nf4_matmul.json").exists()
    assert "gpu session done" in done.stdout


WHEELS = ROOT / "validation" / "wheels"


def test_fetched_wheels_match_the_gpu_image():
    """CPython 3.12 on x86-64 (validation/README.md): cp312 or py3-none-any, manylinux x86_64,
    one version per package, and every dependency either carried or in the image."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        pytest.skip("validation/wheels is empty: run validation/fetch_wheels.sh")
    names = [w.name.split("-")[0].lower() for w in wheels]
    assert len(names) == len(set(names)), names
    for wheel in wheels:
        _, _, python, abi, platform = wheel.stem.rsplit("-", 4)
        assert python in ("cp312", "py3") or "py3" in python.split("."), wheel.name
        assert abi in ("cp312", "none", "abi3"), wheel.name
        assert platform == "any" or ("manylinux" in platform and platform.endswith("x86_64")), wheel.name
    carried = {n.replace("_", "-") for n in names}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            for line in archive.read(metadata).decode().splitlines():
                if line.startswith("Requires-Dist:") and "extra ==" not in line:
                    requirement = line.split(":", 1)[1].strip().split(";")[0]
                    name = requirement.split()[0].split("[")[0]
                    for sep in "<>=!~":
                        name = name.split(sep)[0]
                    name = name.strip().lower().replace("_", "-")
                    assert name in carried or name in IMAGE_PACKAGES, (wheel.name, requirement)


# What the GPU image already holds that the carried wheels need (KINDS.md's package list).
IMAGE_PACKAGES = {"torch", "numpy", "packaging"}



def test_a_cuda_error_outside_the_case_still_stops_and_is_recorded(monkeypatch, tmp_path):
    """An asynchronous CUDA error can surface in the set-up around a case, not in its step."""
    cases, out = smoke_cases()[:2], tmp_path / "rows.csv"

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: unspecified launch failure")

    monkeypatch.setattr(harness, "run_case", broken)
    rows = runner.run_cases(cases, out, "cpu", echo=lambda text: None)
    assert [r["status"] for r in rows] == ["cuda_error"]
    assert _ids(out) == [(cases[0].case_id, "cuda_error")]
