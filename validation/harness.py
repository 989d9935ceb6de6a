"""Run one case end to end and return its results row (see `results.py` for the columns).

Training: warm-up steps (the optimizer state is created in the first), then measured steps;
each step is forward + loss under `torch.autocast(device_type, dtype=compute)` like the HF
Trainer (the outputs dropped before backward, as `Trainer.compute_loss` returns only the
loss), `loss.backward()`, `optimizer.step()` + `zero_grad(set_to_none=True)`; with gradient
accumulation, that many micro-batches per step. Peaks are reset before each phase and read
after it; per phase the largest over the measured steps is kept. Inference: `generate` with
a KV cache (DynamicCache), greedy, exactly `max_new_tokens` new tokens.

`torch.cuda.OutOfMemoryError` is a result (status=oom); on CPU (smoke) nothing is measured.
Besides the allocator's peaks a row records what they cannot see: device memory in use outside
the caching allocator (`torch.cuda.mem_get_info` in use minus `memory_reserved`: the CUDA
context, loaded kernels and resident managed memory) at the case's start and its largest at a
phase end, the size of bitsandbytes' paged (managed-memory) optimizer buffers, and what was
still allocated / reserved when the case started (left over from an earlier case).
A CUDA error other than OOM (`cuda_error`) leaves the context unusable: the runner stops and
the session resumes in a fresh process.
"""
from __future__ import annotations

import gc
import math
import time

import torch

from validation import results
from validation.build import TORCH_DTYPES, bitsandbytes_missing, build_model, make_optimizer
from validation.cases import Case, memory_fraction, planner_gpu, predict
from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.optimizers import get_optimizer
from vramplan.phases import MEASURED_STEP_PHASES

NAN = float("nan")


class Probe:
    """The allocator's three numbers, as torchtune's `get_memory_stats` reports them. On a
    device without CUDA memory statistics every reading is NaN: nothing is claimed."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.outside_peak = NAN  # largest device memory in use outside the allocator, at a reading

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def _read(self, allocated, reserved, active_key: str) -> dict[str, float]:
        if not self.cuda:
            return {m: NAN for m in results.MEASURES}
        torch.cuda.synchronize()
        outside = outside_allocator_bytes()
        self.outside_peak = outside if math.isnan(self.outside_peak) else max(self.outside_peak, outside)
        return {"allocated": allocated(), "reserved": reserved(),
                "active": torch.cuda.memory_stats().get(active_key, NAN)}

    def peak(self) -> dict[str, float]:
        """Peaks since the last reset."""
        return self._read(torch.cuda.max_memory_allocated, torch.cuda.max_memory_reserved, "active_bytes.all.peak")

    def current(self) -> dict[str, float]:
        """What is held now."""
        return self._read(torch.cuda.memory_allocated, torch.cuda.memory_reserved, "active_bytes.all.current")


def outside_allocator_bytes() -> int:
    """Device memory in use that the caching allocator does not hold: (total - free) from
    `cudaMemGetInfo` minus `memory_reserved`. In a fresh process, the CUDA context."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def paged_bytes(optimizer) -> int:
    """Bytes of bitsandbytes' paged optimizer state: buffers from `bitsandbytes.functional.get_paged`
    (cudaMallocManaged, marked `is_paged`), invisible to `max_memory_allocated`."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor) and getattr(t, "is_paged", False))


def is_cuda_error(exc: BaseException) -> bool:
    """A CUDA error that is not an OOM (illegal address, launch failure...): after one, the
    process's CUDA context is unusable, so no later case in it can be trusted."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch >= 2.8
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return "CUDA error" in str(exc)


class PhaseRecord:
    """Largest reading per phase and measure."""

    def __init__(self):
        self.values: dict[str, dict[str, float]] = {}
        self.paged_bytes: int | None = None  # bitsandbytes' paged optimizer buffers, after the last step

    def record(self, phase: str, reading: dict[str, float]) -> None:
        kept = self.values.setdefault(phase, {})
        for measure, value in reading.items():
            old = kept.get(measure)
            kept[measure] = value if old is None or (math.isnan(old) or value > old) else old

    def peak(self, measure: str, phases=MEASURED_STEP_PHASES) -> float:
        found = [self.values[p][measure] for p in phases if p in self.values]
        found = [v for v in found if not math.isnan(v)]
        return max(found) if found else NAN


def _train(model, case: Case, device: torch.device, compute: torch.dtype, probe: Probe, record: PhaseRecord):
    run = case.run
    vocab = model.config.vocab_size
    optimizer = make_optimizer(run.optimizer, [p for p in model.parameters() if p.requires_grad])
    model.train()
    for step in range(case.warmup_steps + case.measured_steps):
        measuring = step >= case.warmup_steps
        for _ in range(run.grad_accum_steps):
            ids = torch.randint(0, vocab, (run.micro_batch_size, run.seq_len), device=device)
            probe.reset()
            with torch.autocast(device_type=device.type, dtype=compute):
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss / run.grad_accum_steps
            if measuring:
                record.record("forward", probe.peak())
            probe.reset()
            loss.backward()
            if measuring:
                record.record("backward", probe.peak())
            del loss, ids
        probe.reset()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if measuring:
            record.record("optimizer", probe.peak())
    record.paged_bytes = paged_bytes(optimizer)


def _generate(model, case: Case, device: torch.device, probe: Probe, record: PhaseRecord):
    run = case.run
    vocab = model.config.vocab_size
    for step in range(case.warmup_steps + case.measured_steps):
        ids = torch.randint(0, vocab, (run.micro_batch_size, run.seq_len), device=device)
        probe.reset()
        with torch.no_grad():
            if run.max_new_tokens > 0:
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=run.max_new_tokens, min_new_tokens=run.max_new_tokens,
                               use_cache=True)
            else:
                model(input_ids=ids, use_cache=True, logits_to_keep=1)
        if step >= case.warmup_steps:
            record.record("generate", probe.peak())
        del ids


def _execute(case: Case, device: torch.device, gpu, probe: Probe, record: PhaseRecord) -> None:
    """Build, prepare, run. Everything large lives in this frame and dies with it."""
    dtypes = resolve_dtypes(case.run, gpu, case.model_spec())
    model = build_model(case.model_spec(), case.run, gpu, device)
    record.record("load", probe.current())
    if case.run.trains:
        _train(model, case, device, TORCH_DTYPES[dtypes.compute], probe, record)
    else:
        _generate(model, case, device, probe, record)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def planned_row(case: Case, device: torch.device, env: dict):
    """The row's case, environment and prediction columns, and the planner's GPU (None when the
    planner refused the case: the row then says why, status error)."""
    row = {
        **env, "case_id": case.case_id, "model": case.model, "layers": case.layers, "method": case.run.method,
        "gpu": case.gpu, "memory_cap_bytes": case.memory_cap_bytes, "config_json": case.config_dict(),
    }
    try:
        row["architecture"] = case.model_spec().architecture
        device_total = int(env["device_total_bytes"]) if device.type == "cuda" and env.get("device_total_bytes") else None
        gpu = planner_gpu(case, device_total)
        prediction = predict(case, gpu)
        if case.memory_cap_bytes is not None and device_total:
            row["memory_fraction"] = memory_fraction(case.memory_cap_bytes, device_total)
    except InputError as exc:
        return {**row, "status": "error", "error": f"planner: {exc}"}, None
    row.update({
        "predicted_peak_bytes": prediction.peak_bytes, "predicted_peak_phase": prediction.peak_phase,
        "predicted_required_bytes": prediction.required_bytes, "predicted_capacity_bytes": prediction.capacity_bytes,
        "predicted_fits": prediction.fits,
        **{f"predicted_{phase}_bytes": value for phase, value in prediction.phase_bytes.items()},
    })
    return row, gpu


def run_case(case: Case, device: str | torch.device = "cuda", env: dict | None = None) -> dict:
    """Run `case` on `device` and return its results row (never raises for a failed run)."""
    device = torch.device(device)
    env = env if env is not None else results.environment(device.type)
    started = time.perf_counter()
    row, gpu = planned_row(case, device, env)
    if gpu is None:
        return row
    if get_optimizer(case.run.optimizer).uses_bitsandbytes and (reason := bitsandbytes_missing()):
        return {**row, "status": "not_measured", "error": reason}

    probe, record, held = Probe(device), PhaseRecord(), {}
    status, error = ("ok" if probe.cuda else "smoke"), ""
    if probe.cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(row.get("memory_fraction") or 1.0)
        torch.cuda.reset_peak_memory_stats()
        held.update(start_allocated=torch.cuda.memory_allocated(), start_reserved=torch.cuda.memory_reserved(),
                    outside_start=outside_allocator_bytes())
    try:
        _execute(case, device, gpu, probe, record)
    except torch.cuda.OutOfMemoryError as exc:
        status, error = "oom", _first_line(exc)
        if probe.cuda:  # the peak reached before the failed allocation
            record.record("oom", {"allocated": torch.cuda.max_memory_allocated(),
                                  "reserved": torch.cuda.max_memory_reserved(), "active": NAN})
    except Exception as exc:  # a failed build or step (UnsupportedCase included) is a result too
        status, error = ("cuda_error" if is_cuda_error(exc) else "error"), _first_line(exc)
    finally:
        gc.collect()
        if probe.cuda and status != "cuda_error":
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)

    row.update({"status": status, "error": error, "seconds": round(time.perf_counter() - started, 2)})
    for phase, reading in record.values.items():
        if phase in results.PHASES:
            row.update({f"measured_{phase}_{m}_bytes": _as_int(v) for m, v in reading.items()})
    step_phases = (*MEASURED_STEP_PHASES, "oom")
    row["measured_peak_bytes"] = _as_int(record.peak("allocated", step_phases))
    row["measured_peak_reserved_bytes"] = _as_int(record.peak("reserved", step_phases))
    row["measured_peak_active_bytes"] = _as_int(record.peak("active", step_phases))
    row.update({
        "measured_start_allocated_bytes": held.get("start_allocated"),
        "measured_start_reserved_bytes": held.get("start_reserved"),
        "measured_outside_allocator_start_bytes": held.get("outside_start"),
        "measured_outside_allocator_peak_bytes": _as_int(probe.outside_peak),
        "measured_paged_bytes": record.paged_bytes if probe.cuda else None,
    })
    return row


def _as_int(value: float):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)
