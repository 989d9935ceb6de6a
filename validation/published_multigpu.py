"""The multi-GPU view of the published corpus: each entry of validation/published/multigpu/ against
`plan_ranks`, the per-rank GPU figures and the host-RAM figures summarized apart.

A GPU measurement (allocated, reserved, nvidia_smi, unstated ...) is compared with the Breakdown of the rank
the source printed (else the worst rank) under the single-GPU conventions of validation/published.py; a
`host` measurement with the node's `ClusterPlan.host.required_bytes`. The two kinds never share a median:
a host figure is tens of GB read off `free` or `top`, a GPU figure a CUDA allocator peak.
"""
from __future__ import annotations

from dataclasses import dataclass

from validation.published import (HOST_MEASURES, Comparison, Summary, _measured_text, _number, _short_stack,
                                  _summary_lines, compare, markdown_table, summarize, text_table)


@dataclass(frozen=True)
class MultiGpuSummary:
    comparisons: tuple[Comparison, ...]
    gpu: Summary  # the per-rank GPU entries
    host: Summary  # the host-RAM entries


def compare_all(entries, default_stack: bool = False) -> list[Comparison]:
    return [compare(entry, default_stack=default_stack) for entry in entries]


def summarize_multigpu(comparisons: list[Comparison], worst: int = 5) -> MultiGpuSummary:
    """Per-rank GPU entries and host-RAM entries summarized apart (median and max |error|, verdicts, worst)."""
    gpu = [c for c in comparisons if c.entry.measured not in HOST_MEASURES]
    host = [c for c in comparisons if c.entry.measured in HOST_MEASURES]
    return MultiGpuSummary(tuple(comparisons), summarize(gpu, worst=worst), summarize(host, worst=worst))


def parallel_text(parallel: dict) -> str:
    """'2x1 fsdp offload params' (GPUs per node x nodes, strategy, offload, T) for the table."""
    from vramplan.estimate import make_parallel

    config = make_parallel(**parallel)
    parts = [f"{config.gpus}x{config.nodes}", config.resolved_strategy]
    if config.offload != "none":
        parts.append(f"offload {config.offload}")
    if config.tensor_parallel > 1:
        parts.append(f"T={config.tensor_parallel}")
    return " ".join(parts)


HEADER = ["entry", "parallel", "measured", "source", "planner", "error", "compared", "verdict (planner)",
          "planned stack (recipe; versions)"]


def _row(c: Comparison) -> list[str]:
    error = "" if c.error_pct is None else f"{c.error_pct * 100:+.1f}%"
    if error and not c.in_error_stats:
        error = f"({error})"
    verdict = ("ok" if c.verdict_agrees else "DIFFERS") + f" ({'fits' if c.planner_fits else 'OOM'})"
    return [c.entry.id, parallel_text(c.entry.parallel), c.entry.measured, _measured_text(c.entry),
            _number(c.predicted, c.entry.unit), error, c.planned_ranks, verdict, _short_stack(c)]


def _lines(summary: MultiGpuSummary) -> list[str]:
    gpu = [f"per-rank GPU: {line}" for line in _summary_lines(summary.gpu)[1:]]
    host = [f"host RAM: {line}" for line in _summary_lines(summary.host)[1:3]]
    sources = len({c.entry.source.id for c in summary.comparisons})
    return [f"{len(summary.comparisons)} multi-GPU entries from {sources} sources, planned with plan_ranks "
            f"({len(summary.gpu.comparisons)} per-rank GPU, {len(summary.host.comparisons)} host RAM)", *gpu, *host]


def render_text(summary: MultiGpuSummary) -> str:
    return text_table(HEADER, [_row(c) for c in summary.comparisons], _lines(summary))


def render_markdown(summary: MultiGpuSummary) -> str:
    return markdown_table(HEADER, [_row(c) for c in summary.comparisons], _lines(summary))


def _figures(summary: Summary) -> dict:
    return {"median_abs_error_pct": summary.median_abs_error_pct, "max_abs_error_pct": summary.max_abs_error_pct,
            "error_entries": summary.error_entries, "verdict_agree": summary.verdict_agree,
            "verdict_total": summary.verdict_total, "source_oom_called_fits": list(summary.source_oom_called_fits),
            "worst": [c.entry.id for c in summary.worst]}


def to_json(summary: MultiGpuSummary) -> dict:
    return {
        "entries": [
            {"id": c.entry.id, "source": c.entry.source.id, "citation": c.entry.source.citation,
             "url": c.entry.source.url, "date": c.entry.source.date, "table": c.entry.table, "quote": c.entry.quote,
             "stack_stated": c.entry.stack, "planned_stack": c.planned_stack, "planned_recipe": c.planned_recipe,
             "hardware": c.entry.hardware, "gpu": c.entry.gpu, "model": c.entry.model, "run": c.entry.run,
             "parallel": c.entry.parallel, "rank": c.entry.rank, "host_ram_bytes": c.entry.host_ram_bytes,
             "compared": c.planned_ranks, "unstated": list(c.entry.unstated), "assumed": c.entry.assumed,
             "measured": c.entry.measured, "unit": c.entry.unit, "value": c.entry.value, "predicted": c.predicted,
             "error_pct": None if c.error_pct is None else c.error_pct * 100, "in_error_stats": c.in_error_stats,
             "source_fits": c.source_fits, "planner_fits": c.planner_fits, "notes": c.entry.notes}
            for c in summary.comparisons],
        "summary": {"gpu": _figures(summary.gpu), "host": _figures(summary.host)},
    }
