"""The results CSV: one row per run, appended, never edited by hand.

Columns: when and where it ran (device, total memory, driver, library versions), the case
(model, layers, method, the full config as JSON), then bytes: for each phase (load, forward,
backward, optimizer, generate) the measured `max_memory_allocated`, `max_memory_reserved` and
allocator active peak (`memory_stats()["active_bytes.all.peak"]`) with the planner's
prediction for that phase; and the step's peak and the planner's peak and verdict.

"load" is what is allocated once the model is built and prepared (current, not a peak);
every other phase is a peak between `reset_peak_memory_stats()` and the phase's end, the
largest over the measured steps. Status: ok, oom, error, cuda_error (a CUDA error other than
OOM: the runner stops, the session resumes in a fresh process), not_measured (e.g. bitsandbytes
absent) or smoke (CPU run: measured columns empty, nothing claimed). No torch at import.

What the allocator's numbers cannot see has its own columns: `cuda_context_bytes` (device
memory in use outside the caching allocator right after CUDA starts in this process: `total -
free` from `torch.cuda.mem_get_info` minus `memory_reserved`), the same at the case's start and
its largest at a phase end (`measured_outside_allocator_*`: context, loaded kernels, resident
managed memory), bitsandbytes' paged optimizer buffers (`measured_paged_bytes`, managed memory),
and what was allocated / reserved when the case started (`measured_start_*`: left over from an
earlier case). Under a memory cap, `memory_cap_bytes` is the cap and `memory_fraction` the
`set_per_process_memory_fraction` argument it became on this card.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
from pathlib import Path

from vramplan.errors import InputError
from vramplan.phases import MEASURED_STEP_PHASES
from vramplan.results_files import csv_files, read_csv_rows

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STATUSES = ("ok", "oom", "error", "cuda_error", "not_measured", "smoke")
PHASES = ("load", *MEASURED_STEP_PHASES)  # the phases of a step: vramplan/phases.py
MEASURES = ("allocated", "reserved", "active")

ENV_COLUMNS = (
    "date", "device_name", "device_total_bytes", "cuda_context_bytes", "driver", "cuda", "torch", "triton",
    "transformers", "peft", "bitsandbytes", "python",
)
CASE_COLUMNS = (
    "case_id", "model", "architecture", "layers", "method", "gpu", "memory_cap_bytes", "memory_fraction", "status",
    "error",
    "seconds", "config_json",
)
PEAK_COLUMNS = (
    "measured_peak_bytes", "measured_peak_reserved_bytes", "measured_peak_active_bytes",
    "predicted_peak_bytes", "predicted_peak_phase", "predicted_required_bytes", "predicted_capacity_bytes",
    "predicted_fits",
)
PHASE_COLUMNS = tuple(
    column
    for phase in PHASES
    for column in (*(f"measured_{phase}_{m}_bytes" for m in MEASURES), f"predicted_{phase}_bytes")
)
HELD_COLUMNS = (
    "measured_start_allocated_bytes", "measured_start_reserved_bytes", "measured_outside_allocator_start_bytes",
    "measured_outside_allocator_peak_bytes", "measured_paged_bytes",
)
COLUMNS = ENV_COLUMNS + CASE_COLUMNS + PEAK_COLUMNS + PHASE_COLUMNS + HELD_COLUMNS


def _version(module_name: str) -> str:
    try:
        from importlib.metadata import version

        return version(module_name)
    except Exception:
        return ""


def environment(device: str = "cuda") -> dict:
    """The environment columns; torch is imported here (the harness already has it)."""
    import torch

    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__, "cuda": torch.version.cuda or "",
        "triton": _version("triton"), "transformers": _version("transformers"), "peft": _version("peft"),
        "bitsandbytes": _version("bitsandbytes"), "python": platform.python_version(),
        "device_name": "cpu", "device_total_bytes": "", "cuda_context_bytes": "", "driver": "",
    }
    if device == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(0)
        env["device_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
        free, total = torch.cuda.mem_get_info()  # starts the CUDA context if nothing has yet
        env["cuda_context_bytes"] = total - free - torch.cuda.memory_reserved()
        env["driver"] = _driver_version()
    return env


def _driver_version() -> str:
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        pass
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except Exception:
        return ""


def default_results_path(device_name: str, date: _dt.date | None = None) -> Path:
    """`validation/results/<date>-<device>.csv`, the device name made file-safe."""
    date = date or _dt.datetime.now(_dt.timezone.utc).date()
    slug = "".join(ch if ch.isalnum() else "-" for ch in device_name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return RESULTS_DIR / f"{date.isoformat()}-{slug or 'device'}.csv"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:  # NaN: nothing measured
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def append_row(path: str | Path, row: dict) -> None:
    """Append one row (header first if the file is new); refuse a file with other columns."""
    path = Path(path)
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"not result columns: {', '.join(unknown)}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)} (got {row.get('status')!r})")
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if tuple(header) != COLUMNS:
            raise InputError(str(path), "has other columns than this harness writes; give a new --out file")
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
        handle.flush()


def done_case_ids(path: str | Path) -> set[str]:
    """Case ids that already have a row in `path` (none when it does not exist yet)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return set()
    return {row["case_id"] for row in read_csv_rows(path)[1] if row.get("case_id")}


def read_rows(paths) -> list[dict]:
    """Rows of every results CSV under `paths`, as dicts of strings plus `source` (file name)."""
    rows = []
    for file in csv_files(paths):
        header, records = read_csv_rows(file)
        missing = [c for c in ("case_id", "status", "measured_peak_bytes", "predicted_peak_bytes") if c not in header]
        if missing:
            raise InputError(str(file), f"not a validation results file (missing {', '.join(missing)})")
        for row in records:
            row["source"] = file.name
            rows.append(row)
    return rows
