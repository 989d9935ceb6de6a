"""Predicted vs measured peak memory from the GPU validation results (`validation/results/*.csv`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vramplan.errors import InputError
from vramplan.results_files import csv_files, read_csv_rows
from vramplan.text import parse_float, shown
from vramplan.plots.style import MARKERS, OKABE_ITO, new_figure, plain_text, to_gib

REQUIRED_COLUMNS = ("model", "method", "predicted_peak_bytes", "measured_peak_bytes", "status")
GPU_COLUMNS = ("gpu", "device_name")
DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "validation" / "results"


@dataclass(frozen=True)
class ValidationResults:
    """One entry per CSV row. Only `ok` rows with a measurement are plotted; `oom` rows are
    counted; other statuses of the harness (error, not_measured, smoke) are counted apart."""

    model: tuple[str, ...]
    method: tuple[str, ...]
    gpu: tuple[str, ...]
    status: tuple[str, ...]
    predicted: np.ndarray
    measured: np.ndarray
    sources: tuple[str, ...]

    @property
    def ok(self) -> np.ndarray:
        return (np.array(self.status) == "ok") & np.isfinite(self.measured) & (self.measured > 0)

    def relative_error(self) -> np.ndarray:
        """(predicted - measured) / measured for the runs that completed."""
        ok = self.ok
        return (self.predicted[ok] - self.measured[ok]) / self.measured[ok]


def _number(text: str, where: str, column: str) -> float:
    """A byte count from a results CSV: empty is nan (not measured); else `vramplan.text.parse_float`'s rule
    (ASCII digits, finite), so 'nan', 'inf' and '١٢' are refused as the other results readers refuse them."""
    if text is None or not text.strip():
        return float("nan")
    try:
        return parse_float(text, column)
    except InputError:
        raise InputError(where, f"{column} must be a number of bytes (got '{shown(text, 40)}')") from None


def load_validation_results(paths=(DEFAULT_RESULTS,), field: str = "--results") -> ValidationResults:
    """Rows of every CSV under `paths` (files or folders); columns are checked by name."""
    rows: list[tuple] = []
    for file in csv_files(paths, field):
        fieldnames, records = read_csv_rows(file)  # bounded, UTF-8 checked (vramplan.results_files)
        columns = set(fieldnames)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if not columns & set(GPU_COLUMNS):
            missing.append(" or ".join(GPU_COLUMNS))
        if missing:
            raise InputError(str(file), f"missing column(s) {', '.join(missing)}; needed: "
                                        f"{', '.join(REQUIRED_COLUMNS)} and gpu or device_name")
        gpu_column = next(c for c in GPU_COLUMNS if c in columns)
        for line, row in enumerate(records, start=2):
            where = f"{file}:{line}"
            status = (row["status"] or "").strip().lower()
            if not status:
                raise InputError(where, "status is empty (expected ok, oom, error, ...)")
            rows.append((row["model"], row["method"], row[gpu_column], status,
                         _number(row["predicted_peak_bytes"], where, "predicted_peak_bytes"),
                         _number(row["measured_peak_bytes"], where, "measured_peak_bytes"), file.name))
    if not rows:
        raise InputError(field, "the validation CSV files have no rows")
    model, method, gpu, status, predicted, measured, sources = zip(*rows)
    return ValidationResults(model, method, gpu, status, np.array(predicted), np.array(measured), sources)


def validation_figure(results: ValidationResults, band: float = 0.10):
    """Log-log scatter (colour + marker per method), the y = x line and a +-band error band."""
    figure = new_figure(7.0, 6.0)
    axes = figure.add_subplot()
    ok = results.ok
    predicted, measured = to_gib(results.predicted), to_gib(results.measured)
    methods = sorted(set(np.array(results.method)[ok]))
    for k, method in enumerate(methods):
        chosen = ok & (np.array(results.method) == method)
        axes.scatter(predicted[chosen], measured[chosen], label=plain_text(f"{method} ({int(chosen.sum())})"),
                     color=OKABE_ITO[k % len(OKABE_ITO)], marker=MARKERS[k % len(MARKERS)],
                     edgecolor="black", linewidth=0.5, s=36, zorder=3)
    if ok.any():
        low = min(predicted[ok].min(), measured[ok].min()) / 1.3
        high = max(predicted[ok].max(), measured[ok].max()) * 1.3
    else:
        low, high = 0.5, 100.0
    line = np.geomspace(low, high, 50)
    axes.plot(line, line, color="black", linewidth=1.0, label="predicted = measured")
    axes.fill_between(line, line / (1 + band), line / (1 - band) if band < 1 else high,
                      color="#BBBBBB", alpha=0.45, hatch="..", edgecolor="#777777", linewidth=0,
                      label=f"prediction within \u00b1{band:.0%} of measured")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_aspect("equal")
    from matplotlib.ticker import LogLocator, NullLocator

    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(lambda value, _pos: f"{value:g}")
    axes.set_xlabel("predicted peak (GiB)")
    axes.set_ylabel("measured torch.cuda.max_memory_allocated (GiB)")
    errors = results.relative_error()
    within = int((np.abs(errors) <= band).sum())
    status = np.array(results.status)
    oom = int((status == "oom").sum())
    other = int((~ok & (status != "oom")).sum())
    summary = (f"{len(errors)} runs measured, {within} within \u00b1{band:.0%}"
               + (f", median |error| {np.median(np.abs(errors)):.1%}" if len(errors) else "")
               + (f"; {oom} OOM run(s) not plotted" if oom else "")
               + (f"; {other} other row(s) (error, not measured) not plotted" if other else ""))
    axes.set_title(f"Predicted vs measured peak memory\n{summary}", fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(which="both", alpha=0.3)
    return figure
