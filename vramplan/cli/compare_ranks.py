"""`vramplan compare` on more than one GPU: one row per GPU (or model) of the plan's worst rank and the host.

`compare --gpus` is the list of GPUs to compare, so the count per node comes from an `NxGPU`
prefix on an entry (`4xa100-40g`) or `--gpu-count N`; every other multi-GPU flag is `fit`'s
(`add_parallel_arguments`). `--host-ram` is one flag shared with `--engine llama.cpp`: the host
RAM of one training node here, llama.cpp's system RAM there.
"""
from __future__ import annotations

import argparse
import json

from vramplan.cli.compare import FIELDS
from vramplan.present import gib, table

RANK_FIELDS = (*FIELDS, "strategy", "world_size", "worst_rank", "host_required_bytes", "host_ram_bytes", "host_fits")
"""compare's columns (max batch / seq: the largest at which every rank fits), then the per-rank ones."""

HOST_RAM_HELP = ("host RAM: of one training node on more than one GPU (default there: this machine's RAM; "
                 "'unknown' skips the host verdict), or the system RAM llama.cpp offloads to (--engine llama.cpp); "
                 "sizes like 64GiB")
BAR_WIDTH = 20
_SKIPPED = ("--gpus", "--host-ram")  # compare's own --gpus list; --host-ram comes with the engine flags


def add_rank_arguments(parser: argparse.ArgumentParser) -> None:
    """`fit`'s multi-GPU flags but --gpus (here the count is --gpu-count or an NxGPU prefix) and --host-ram."""
    from vramplan.cli.parallel_flags import add_parallel_arguments
    from vramplan.cli.run_flags import bounded_int
    from vramplan.specs.parallel import MAX_GPUS_PER_NODE

    scratch = argparse.ArgumentParser(add_help=False)
    add_parallel_arguments(scratch)
    group = parser.add_argument_group("more than one GPU (per-rank rows; default: one GPU each)")
    group.add_argument("--gpu-count", dest="gpu_count", type=bounded_int("--gpu-count", 1, MAX_GPUS_PER_NODE),
                       default=None, metavar="N",
                       help="GPUs per node for each --gpus entry without an NxGPU prefix such as 4xa100-40g "
                            "(and for --gpu with --models); default 1")
    for scratch_group in scratch._action_groups:
        for action in scratch_group._group_actions:
            if action.option_strings and not set(action.option_strings) & set(_SKIPPED):
                group._add_action(action)


def _parallel_fields(args) -> dict:
    from vramplan.specs.parallel import ParallelConfig

    return {name: getattr(args, name) for name in ParallelConfig.model_fields
            if name != "gpus" and getattr(args, name, None) is not None}


def wants_ranks(args) -> bool:
    """Per-rank rows: a GPU count (prefix or --gpu-count) or any multi-GPU flag was given."""
    from vramplan.cli.parallel_flags import split_gpu_count

    entries = args.gpus.split(",") if args.gpus is not None else [args.gpu or ""]
    counted = any(split_gpu_count(entry.strip())[0] is not None for entry in entries)
    return counted or args.gpu_count is not None or bool(_parallel_fields(args))


def parallel_for(args, count: int | None):
    """The ParallelConfig of one row: the row's count (prefix or --gpu-count; None: 1) and the other flags."""
    from vramplan.cli.parallel_flags import parallel_from_args
    from vramplan.errors import InputError

    if count is not None and count < 1:
        raise InputError("--gpus" if args.gpus is not None else "--gpu", f"a GPU count of {count}: give 1 or more")
    return parallel_from_args(argparse.Namespace(**{**vars(args), "gpus": count, "gpu": ""}))


def rank_row(name: str, model, gpu, run, parallel, margin_bytes: int, host_ram_bytes: int | None) -> dict:
    """One row: the worst rank's verdict and numbers, the host RAM one node needs, and the worst rank's Breakdown."""
    from vramplan.distributed.solve import max_per_rank
    from vramplan.errors import InputError
    from vramplan.estimate import plan_ranks
    from vramplan.present_ranks import cluster_verdict
    from vramplan.solvers import DEFAULT_LIMITS

    layout = {"strategy": parallel.resolved_strategy, "world_size": parallel.world_size}
    try:
        cluster = plan_ranks(model, gpu, run, parallel=parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)
    except InputError as exc:
        return {"name": name, "verdict": "n/a", "note": str(exc), **layout}
    worst = cluster.worst_rank
    b = worst.breakdown
    host = cluster.host
    return {
        "name": name, "verdict": cluster_verdict(cluster),
        "peak_allocated_bytes": b.peak_allocated_bytes, "required_bytes": b.required_bytes,
        "capacity_bytes": b.capacity_bytes, "headroom_bytes": b.headroom_bytes,
        "max_micro_batch": max_per_rank("batch", model, gpu, run, parallel, limit=DEFAULT_LIMITS["batch"],
                                        margin_bytes=margin_bytes),
        "max_seq_len": max_per_rank("seq", model, gpu, run, parallel, limit=DEFAULT_LIMITS["seq"],
                                    margin_bytes=margin_bytes),
        "context_window": model.max_position_embeddings, "note": b.blocked_by,
        "strategy": cluster.strategy, "world_size": cluster.world_size, "worst_rank": worst.name,
        "host_required_bytes": host.required_bytes, "host_ram_bytes": host.host_ram_bytes, "host_fits": host.fits,
        "breakdown": b,
    }


def run_ranks(args) -> int:
    from vramplan.cli.compare import _write_csv, subjects_with_counts
    from vramplan.cli.engine_flags import engine_namespace
    from vramplan.cli.fit import margin_from_args
    from vramplan.cli.parallel_flags import host_ram_from_args
    from vramplan.cli.run_flags import run_config_from_args

    engine_namespace(argparse.Namespace(**{**vars(args), "host_ram": None}))  # engine flags without --engine
    run_config = run_config_from_args(args)
    title, first, subjects = subjects_with_counts(args)
    margin = margin_from_args(args)
    rows, ram_sources = [], set()
    for name, model, gpu, count in subjects:
        parallel = parallel_for(args, count)
        host_ram, source = host_ram_from_args(args, parallel)
        ram_sources.add(source)
        rows.append(rank_row(name, model, gpu, run_config, parallel, margin, host_ram))
    breakdowns = [row.pop("breakdown", None) for row in rows]
    rows = [{field: row.get(field) for field in RANK_FIELDS} for row in rows]
    if args.json:
        print(json.dumps({"compare": first, "run": run_config.model_dump(mode="json"), "parallel": _parallel_fields(args),
                          "host_ram_source": " / ".join(sorted(s for s in ram_sources if s)), "rows": rows}, indent=2))
    elif args.csv:
        _write_csv(first, RANK_FIELDS, rows)
    else:
        print(f"{title}: {run_config.method}, batch {run_config.micro_batch_size} x seq {run_config.seq_len} per rank")
        print(render_rank_rows(first, rows, breakdowns, sorted(s for s in ram_sources if s)))
    return 0


def render_rank_rows(first: str, rows: list[dict], breakdowns: list, ram_sources: list[str]) -> str:
    from vramplan.cli.compare import _beyond_context, _seq_cell
    from vramplan.present_bar import bar_cells, text_bar, text_legend

    def size(value):
        return "-" if value is None else gib(value)

    bars = [text_bar(b, BAR_WIDTH) if b is not None else "-" for b in breakdowns]
    bar_width = max(len(bar) for bar in bars)
    header = [first, "strategy", "ranks", "verdict", "worst rank", "peak GiB", "needs GiB", "of GiB", "headroom",
              "max batch", "max seq", "host GiB", "host RAM", "worst rank's memory".ljust(bar_width)]
    body = [[row["name"], row["strategy"], str(row["world_size"]), row["verdict"], row["worst_rank"] or "-",
             size(row["peak_allocated_bytes"]), size(row["required_bytes"]), size(row["capacity_bytes"]),
             size(row["headroom_bytes"]), "-" if row["max_micro_batch"] is None else str(row["max_micro_batch"]),
             _seq_cell(row), size(row["host_required_bytes"]),
             "?" if row["host_ram_bytes"] is None else gib(row["host_ram_bytes"]), bar.ljust(bar_width)]
            for row, bar in zip(rows, bars)]
    # The text columns left, the numbers right; the bars, padded to one width, read left to right.
    lines = [_table_with_left_columns(header, body, left=(0, 1, 3, 4, len(header) - 1))]
    names = [name for b in breakdowns if b is not None for name, cells in bar_cells(b, BAR_WIDTH)[0] if cells]
    if names:
        lines.append(f"bar: one cell = 1/{BAR_WIDTH} of the GPU (of what the rank needs when more): "
                     f"{text_legend(names)}; . free, | capacity")
    lines.append("max batch / max seq: the largest at which every rank fits its GPU (the host aside); host GiB: "
                 "host RAM one node needs (the larger of loading and training); host RAM: "
                 + ("; ".join(ram_sources) if ram_sources else "not known (?)"))
    lines.extend(f"note: {row['name']}: {row['note']}" for row in rows if row["note"])
    if any(_beyond_context(row) for row in rows):
        lines.append("note: * memory allows more tokens than the model's context window (max_position_embeddings)")
    return "\n".join(lines)


def _table_with_left_columns(header: list[str], body: list[list[str]], left: tuple[int, ...]) -> str:
    """present.table with the columns in `left` left-aligned and the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    padded = [[cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
              for row in [header, *body]]
    return table(padded[0], padded[1:], align_right_from=len(header))
