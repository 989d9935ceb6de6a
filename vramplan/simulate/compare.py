"""The simulator beside the analytic model (per phase and category) and beside GPU measurements."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vramplan.memory.plan import phase_components
from vramplan.phases import ANALYTIC_PHASES_OF_SIMULATED

# A simulated phase covers these analytic phases (the one mapping, vramplan/phases.py).
ANALYTIC_PHASES = ANALYTIC_PHASES_OF_SIMULATED


@dataclass(frozen=True)
class PhaseComparison:
    phase: str
    analytic_bytes: int
    simulated_bytes: int
    analytic_categories: dict[str, int]
    simulated_categories: dict[str, int]

    @property
    def relative_gap(self) -> float:
        """(analytic - simulated) / simulated: positive when the analytic model over-predicts."""
        return (self.analytic_bytes - self.simulated_bytes) / max(self.simulated_bytes, 1)

    def category_gaps(self) -> dict[str, int]:
        """analytic - simulated bytes for every category where they differ, largest first."""
        names = set(self.analytic_categories) | set(self.simulated_categories)
        gaps = {name: int(self.analytic_categories.get(name, 0)) - int(self.simulated_categories.get(name, 0))
                for name in names}
        return dict(sorted(((n, g) for n, g in gaps.items() if g), key=lambda item: -abs(item[1])))

    def describe(self) -> str:
        gaps = ", ".join(f"{name} {gap / 2**20:+.1f} MiB" for name, gap in self.category_gaps().items())
        return (f"{self.phase}: analytic {self.analytic_bytes / 2**30:.3f} GiB vs simulated "
                f"{self.simulated_bytes / 2**30:.3f} GiB ({self.relative_gap:+.2%}); by category: {gaps or 'equal'}")


def compare(model_spec, gpu_spec, run, result=None) -> list[PhaseComparison]:
    """Per phase: the analytic prediction and the simulation, each with its live set by category."""
    from vramplan.simulate.engine import simulate

    result = result or simulate(model_spec, gpu_spec, run)
    analytic = phase_components(model_spec, gpu_spec, run)
    out = []
    for phase, simulated in result.phase_peaks.items():
        candidates = [analytic[name] for name in ANALYTIC_PHASES[phase]]
        chosen = max(candidates, key=lambda parts: sum(parts.values()))
        out.append(PhaseComparison(
            phase=phase, analytic_bytes=int(sum(chosen.values())), simulated_bytes=simulated,
            analytic_categories={k: int(v) for k, v in chosen.items() if v},
            simulated_categories=result.phase_categories[phase]))
    return out


MEASURED_COLUMNS = ("measured_peak_bytes", "max_memory_allocated")


def compare_with_results(path) -> list[dict]:
    """Simulator vs measured next to analytic vs measured for every row of a results CSV.

    A row is either the validation harness's (`config_json` holds model, layer override, gpu
    and the full RunConfig; only `status` ok rows count) or a plain one naming `model` and
    `gpu` with any RunConfig fields as columns (empty = default). The measured
    `torch.cuda.max_memory_allocated()` is `measured_peak_bytes` (or `max_memory_allocated`).
    Returns one dict per row: model, gpu, method, architecture, measured, analytic, simulated
    (None when the simulator cannot run it, with `skipped` saying why), and the relative
    errors `analytic_error`, `simulated_error` ((predicted - measured) / measured).
    """
    from vramplan.errors import InputError
    from vramplan.estimate import make_run, plan
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model
    from vramplan.simulate.engine import simulate
    from vramplan.specs.run import RunConfig

    from vramplan.results_files import read_csv_rows
    from vramplan.sources.json_file import parse_json
    from vramplan.text import parse_float

    rows = []
    _header, records = read_csv_rows(Path(path))  # bounded, UTF-8 checked, as every results reader
    for line, row in enumerate(records, start=2):
        where = f"{path}:{line}"
        measured_text = next((row[c] for c in MEASURED_COLUMNS if row.get(c)), None)
        if measured_text is None:
            continue
        if row.get("status", "ok") != "ok":
            continue
        measured = int(parse_float(measured_text, f"{where}: measured peak"))
        if measured <= 0:
            raise InputError(f"{where}: measured peak", f"must be a positive number of bytes (got {measured})")
        if row.get("config_json"):
            model, gpu, run = _harness_row(parse_json(row["config_json"], where, "config_json"), where)
        else:
            fields = {k: _parse_field(v) for k, v in row.items()
                      if k in RunConfig.model_fields and v not in (None, "")}
            if not row.get("model") or not row.get("gpu"):
                raise InputError(where, "a row without config_json needs model and gpu columns")
            model, gpu, run = resolve_model(row["model"]), get_gpu(row["gpu"]), make_run(**fields)
        analytic = plan(model, gpu, run).peak_allocated_bytes
        out = {"model": model.name, "gpu": gpu.name, "method": run.method, "architecture": model.architecture,
               "measured": measured, "analytic": analytic,
               "analytic_error": (analytic - measured) / measured, "simulated": None,
               "simulated_error": None, "skipped": ""}
        try:
            simulated = simulate(model, gpu, run).peak_bytes
        except InputError as exc:
            out["skipped"] = str(exc)
        else:
            out["simulated"] = simulated
            out["simulated_error"] = (simulated - measured) / measured
        rows.append(out)
    return rows


def _harness_row(config, where: str):
    """(model, gpu, run) from the harness's config_json: an object with model, gpu, run and optional layers."""
    from vramplan.errors import InputError
    from vramplan.estimate import make_run
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model
    from vramplan.text import parse_int

    if not (isinstance(config, dict) and isinstance(config.get("model"), str) and isinstance(config.get("gpu"), str)
            and isinstance(config.get("run", {}), dict)):
        raise InputError(f"{where}: config_json", "must be an object with model and gpu names and a run object")
    model, gpu, run = resolve_model(config["model"]), get_gpu(config["gpu"]), make_run(**config.get("run", {}))
    if config.get("layers"):
        model = model.model_copy(update={"num_hidden_layers": parse_int(str(config["layers"]), f"{where}: layers")})
    return model, gpu, run


def _parse_field(text: str):
    """A RunConfig column: true/false, then an integer or a finite number by `vramplan.text`'s rules, else text
    (RunConfig then refuses what its field does not allow)."""
    from vramplan.errors import InputError
    from vramplan.text import parse_float, parse_int

    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for parse in (parse_int, parse_float):
        try:
            return parse(text, "column")
        except InputError:
            pass
    return text
