"""The accuracy report over results CSVs: how close the planner's peak is to the measured
`max_memory_allocated`, per method and architecture; whether "fits" meant "ran" and "does not
fit" meant OOM; the per-layer and fixed terms from the N / 2N layer pairs; the worst cases.

Error = (predicted - measured) / measured x 100: positive means the planner over-predicts
(safe side). Only rows with status ok enter the error tables; ok and oom rows enter the
verdict table; smoke, error and not_measured rows are only counted. No torch here.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from vramplan.present import GIB, table


def _number(text) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def peak_error(row: dict) -> float:
    measured, predicted = _number(row.get("measured_peak_bytes")), _number(row.get("predicted_peak_bytes"))
    if not measured or math.isnan(measured) or math.isnan(predicted):
        return math.nan
    return 100.0 * (predicted - measured) / measured


@dataclass
class Summary:
    counts: dict[str, int]
    groups: list[list[str]]  # method, architecture, n, median |err|, max |err|, median err
    overall: list[str]
    phases: list[list[str]]  # phase, n, median |err|, max |err|
    verdict: dict[str, int]
    scaling: list[list[str]]
    worst: list[list[str]]
    reserved: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)  # case, status, error


def _stats(errors: list[float]) -> tuple[str, str, str]:
    absolute = [abs(e) for e in errors]
    return (f"{statistics.median(absolute):.1f}", f"{max(absolute):.1f}", f"{statistics.median(errors):+.1f}")


def _scaling_key(row: dict):
    try:
        config = json.loads(row.get("config_json") or "{}")
    except json.JSONDecodeError:
        return None
    for key in ("case_id", "layers"):
        config.pop(key, None)
    return row.get("source", ""), row.get("device_name", ""), json.dumps(config, sort_keys=True)


def _scaling_rows(ok_rows: list[dict]) -> list[list[str]]:
    """Per-layer slope and fixed term, measured vs predicted, from runs that differ only in layers."""
    pairs: dict = {}
    for row in ok_rows:
        key = _scaling_key(row)
        layers = _number(row.get("layers"))
        if key is None or math.isnan(layers):
            continue
        pairs.setdefault(key, {})[int(layers)] = row
    out = []
    for by_layers in pairs.values():
        if len(by_layers) < 2:
            continue
        low, high = min(by_layers), max(by_layers)
        a, b = by_layers[low], by_layers[high]
        slope = {k: (_number(b[c]) - _number(a[c])) / (high - low)
                 for k, c in (("m", "measured_peak_bytes"), ("p", "predicted_peak_bytes"))}
        fixed = {k: _number(a[c]) - slope[k] * low for k, c in (("m", "measured_peak_bytes"), ("p", "predicted_peak_bytes"))}
        name = a["case_id"].rsplit("-L", 1)[0]
        out.append([
            name, f"{low}/{high}", f"{slope['m'] / GIB:.3f}", f"{slope['p'] / GIB:.3f}",
            f"{100 * (slope['p'] - slope['m']) / slope['m']:+.1f}" if slope["m"] else "-",
            f"{fixed['m'] / GIB:.2f}", f"{fixed['p'] / GIB:.2f}",
        ])
    return sorted(out)


def summarize(rows: list[dict], worst: int = 5) -> Summary:
    rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in rows]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("status", "")] = counts.get(row.get("status", ""), 0) + 1
    ok = [row for row in rows if row.get("status") == "ok" and not math.isnan(peak_error(row))]

    grouped: dict[tuple[str, str], list[float]] = {}
    for row in ok:
        grouped.setdefault((row.get("method", ""), row.get("architecture", "")), []).append(peak_error(row))
    groups = [[method, arch, str(len(errors)), *_stats(errors)] for (method, arch), errors in sorted(grouped.items())]
    all_errors = [peak_error(row) for row in ok]
    overall = ["all", "", str(len(all_errors)), *_stats(all_errors)] if all_errors else []

    phases = []
    for phase in ("load", "forward", "backward", "optimizer", "generate"):
        errors = []
        for row in ok:
            measured = _number(row.get(f"measured_{phase}_allocated_bytes"))
            predicted = _number(row.get(f"predicted_{phase}_bytes"))
            if measured and not math.isnan(measured) and not math.isnan(predicted):
                errors.append(100.0 * (predicted - measured) / measured)
        if errors:
            phases.append([phase, str(len(errors)), *_stats(errors)[:2]])

    verdict = {"fits_ran": 0, "fits_oom": 0, "nofit_oom": 0, "nofit_ran": 0}
    for row in rows:
        fits = str(row.get("predicted_fits", "")).lower()
        if row.get("status") not in ("ok", "oom") or fits not in ("true", "false"):
            continue
        key = ("fits" if fits == "true" else "nofit") + ("_ran" if row["status"] == "ok" else "_oom")
        verdict[key] += 1

    reserve = []
    for row in ok:
        allocated, reserved = _number(row.get("measured_peak_bytes")), _number(row.get("measured_peak_reserved_bytes"))
        if allocated and not math.isnan(reserved):
            reserve.append(100.0 * (reserved - allocated) / allocated)
    reserved = [f"{statistics.median(reserve):.1f}", f"{max(reserve):.1f}"] if reserve else []

    ranked = sorted(ok, key=lambda row: abs(peak_error(row)), reverse=True)[:worst]
    worst_rows = [[row["case_id"], row.get("method", ""), f"{_number(row['measured_peak_bytes']) / GIB:.2f}",
                   f"{_number(row['predicted_peak_bytes']) / GIB:.2f}", f"{peak_error(row):+.1f}",
                   row.get("predicted_peak_phase", "")] for row in ranked]
    sources = sorted({row.get("source", "") for row in rows if row.get("source")})
    failures = [[row.get("case_id", ""), row["status"], row.get("error", "")] for row in rows
                if row.get("status") in ("error", "cuda_error", "not_measured")]
    return Summary(counts, groups, overall, phases, verdict, _scaling_rows(ok), worst_rows, reserved, sources,
                   failures)


GROUP_HEADER = ["method", "architecture", "runs", "median |err| %", "max |err| %", "median err %"]
PHASE_HEADER = ["phase", "runs", "median |err| %", "max |err| %"]
SCALING_HEADER = ["case", "layers", "per layer measured GiB", "per layer predicted GiB", "err %",
                  "fixed measured GiB", "fixed predicted GiB"]
WORST_HEADER = ["case", "method", "measured GiB", "predicted GiB", "err %", "predicted peak phase"]


def _verdict_lines(verdict: dict[str, int]) -> list[str]:
    agreed = verdict["fits_ran"] + verdict["nofit_oom"]
    total = sum(verdict.values())
    return [
        f"verdict agreement: {agreed}/{total}",
        f"  planner fits, ran: {verdict['fits_ran']}; planner fits, OOM: {verdict['fits_oom']} (unsafe)",
        f"  planner does not fit, OOM: {verdict['nofit_oom']}; planner does not fit, ran: {verdict['nofit_ran']} (conservative)",
    ]


def _status_line(counts: dict[str, int]) -> str:
    return "runs: " + ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))


def render_text(summary: Summary) -> str:
    lines = [_status_line(summary.counts)]
    if summary.sources:
        lines.append("from: " + ", ".join(summary.sources))
    lines.append("")
    if summary.groups:
        lines.append("peak (max_memory_allocated) error, predicted vs measured:")
        lines.append(table(GROUP_HEADER, summary.groups + ([summary.overall] if summary.overall else []), 2))
    else:
        lines.append("no measured runs (status ok) to compare")
    if summary.phases:
        lines += ["", "per phase:", table(PHASE_HEADER, summary.phases)]
    if summary.reserved:
        lines += ["", f"reserved over allocated at the peak: median {summary.reserved[0]}%, max {summary.reserved[1]}%"]
    lines += [""] + _verdict_lines(summary.verdict)
    if summary.scaling:
        lines += ["", "layer-count scaling (N and 2N layers, each run with its own prediction):",
                  table(SCALING_HEADER, summary.scaling)]
    if summary.worst:
        lines += ["", "worst cases:", table(WORST_HEADER, summary.worst)]
    if summary.failures:
        lines += ["", "not measured or failed:"] + [f"  {case} ({status}): {error}" for case, status, error in summary.failures]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    cells = [[str(cell).replace("|", "\\|") for cell in row] for row in [header, *rows]]
    return "\n".join("| " + " | ".join(row) + " |" for row in [cells[0], align, *cells[1:]])


def render_markdown(summary: Summary) -> str:
    parts = [_status_line(summary.counts) + (f" (from {', '.join(summary.sources)})" if summary.sources else "")]
    if summary.groups:
        parts.append("**Peak memory, predicted vs measured `torch.cuda.max_memory_allocated`**\n\n"
                     + _markdown_table(GROUP_HEADER, summary.groups + ([summary.overall] if summary.overall else []), 2))
    if summary.phases:
        parts.append("**Per phase**\n\n" + _markdown_table(PHASE_HEADER, summary.phases))
    parts.append("**Verdict** (planner vs run)\n\n" + _markdown_table(
        ["planner", "ran", "OOM"],
        [["fits", str(summary.verdict["fits_ran"]), str(summary.verdict["fits_oom"])],
         ["does not fit", str(summary.verdict["nofit_ran"]), str(summary.verdict["nofit_oom"])]]))
    if summary.scaling:
        parts.append("**Layer-count scaling**\n\n" + _markdown_table(SCALING_HEADER, summary.scaling, 2))
    if summary.worst:
        parts.append("**Worst cases**\n\n" + _markdown_table(WORST_HEADER, summary.worst, 2))
    return "\n\n".join(parts)


SIMULATOR_HEADER = ["method", "architecture", "runs", "analytic median |err| %", "analytic max |err| %",
                    "simulator median |err| %", "simulator max |err| %", "not simulated"]


def simulator_rows(compared: list[dict]) -> list[list[str]]:
    """Simulator vs measured next to analytic vs measured, per method and architecture.

    `compared` is `vramplan.simulate.compare_with_results` output (one dict per ok row)."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in compared:
        grouped.setdefault((row["method"], row["architecture"]), []).append(row)
    out = []
    for (method, architecture), rows in sorted(grouped.items()):
        analytic = [100.0 * row["analytic_error"] for row in rows]
        simulated = [100.0 * row["simulated_error"] for row in rows if row["simulated_error"] is not None]
        out.append([method, architecture, str(len(rows)), *_stats(analytic)[:2],
                    *(_stats(simulated)[:2] if simulated else ("-", "-")), str(len(rows) - len(simulated))])
    return out


def render_simulator(rows: list[list[str]], markdown: bool = False) -> str:
    title = "simulator vs measured, next to analytic vs measured (peak max_memory_allocated):"
    if markdown:
        return f"**{title[:-1]}**\n\n" + _markdown_table(SIMULATOR_HEADER, rows, 2)
    return title + "\n" + table(SIMULATOR_HEADER, rows, 2)
