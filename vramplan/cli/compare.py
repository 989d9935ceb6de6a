"""`vramplan compare`: one run on several GPUs, or several models on one GPU, side by side."""
from __future__ import annotations

import argparse
import json

from vramplan.present import gib, table

HELP = "compare one run across GPUs (--gpus) or models (--models): verdict, peak, headroom, max batch/seq"
EPILOG = """examples:
  vramplan compare --gpus t4,a10g,a100-40g --model 13b
  vramplan compare --gpus all --model llama-3.1-8b --seq 2048 --csv
  vramplan compare --models 7b,13b,70b --gpu a100-80g --method lora --json
  vramplan compare --engine vllm --gpus l4,a10g,4090,a100-80g --model mistral-7b --format awq-4bit --max-model-len 32768
  vramplan compare --engine llama.cpp --models llama-3.1-8b,llama-3.1-70b --gpu 4090 --format gguf-q4_k_m --host-ram 64GiB
  vramplan compare --gpus 4xa100-40g,8xa100-40g,2xh100 --model 70b --method lora --strategy fsdp --host-ram 1TiB
  vramplan compare --gpus a100-40g,a100-80g --gpu-count 8 --model 70b --strategy zero3 --offload optimizer
max batch / max seq: the largest that fit with the other settings unchanged (0: none).
--engine vllm|llama.cpp|hf: one row of that engine's headline figures (the flags of `vramplan serve`).
more than one GPU: --gpus stays the list of GPUs to compare; the count per node is an NxGPU prefix on an
entry (4xa100-40g) or --gpu-count N for the entries without one (with --models: --gpu 4xa100-40g or
--gpu-count). With a count, or any flag of the multi-GPU group (--strategy, --offload, --nodes, ...),
each row is the plan's worst rank (verdict, peak, needs, headroom; max batch / max seq at which every
rank fits) plus the host RAM one node needs, and a bar of that rank's components."""

FIELDS = ("name", "verdict", "peak_allocated_bytes", "required_bytes", "capacity_bytes", "headroom_bytes",
          "max_micro_batch", "max_seq_len", "context_window", "note")


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_margin_argument, add_model_gpu_arguments
    from vramplan.cli.engine_flags import add_engine_arguments
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("compare", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default=None, metavar="LIST",
                        help="comma-separated GPU profiles or sizes to compare (or 'all'); uses --model")
    parser.add_argument("--models", default=None, metavar="LIST",
                        help="comma-separated models to compare (or 'all' for the catalog); uses --gpu")
    add_model_gpu_arguments(parser)
    add_margin_argument(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print rows as JSON")
    output.add_argument("--csv", action="store_true", help="print rows as CSV (bytes)")
    add_run_arguments(parser)
    from vramplan.cli.compare_ranks import HOST_RAM_HELP, add_rank_arguments

    add_rank_arguments(parser)  # before the engine flags, which then refuse them beside --engine
    add_engine_arguments(parser)  # after the run flags: a flag both have keeps the run flag's definition
    parser._option_string_actions["--host-ram"].help = HOST_RAM_HELP


def split_list(text: str, flag: str) -> list[str]:
    from vramplan.errors import InputError

    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise InputError(flag, "give a comma-separated list")
    return items


def compare_row(name: str, model, gpu, run, margin_bytes: int = 0) -> dict:
    """One row: the plan's verdict and numbers, and the largest batch and sequence that fit."""
    from vramplan.errors import InputError
    from vramplan.estimate import plan
    from vramplan.solvers import max_micro_batch, max_seq_len

    try:
        result = plan(model, gpu, run, margin_bytes=margin_bytes)
    except InputError as exc:  # this model/GPU cannot run it at all (e.g. bf16 on a T4)
        return {"name": name, "verdict": "n/a", "note": str(exc)}
    return {
        "name": name, "verdict": result.verdict,
        "peak_allocated_bytes": result.peak_allocated_bytes, "required_bytes": result.required_bytes,
        "capacity_bytes": result.capacity_bytes, "headroom_bytes": result.headroom_bytes,
        "max_micro_batch": max_micro_batch(model, gpu, run, margin_bytes=margin_bytes),
        "max_seq_len": max_seq_len(model, gpu, run, margin_bytes=margin_bytes),
        "context_window": model.max_position_embeddings, "note": result.blocked_by,
    }


def run(args) -> int:
    from vramplan.cli.engine_flags import engine_namespace
    from vramplan.cli.fit import margin_from_args
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.errors import InputError

    if (args.gpus is None) == (args.models is None):
        raise InputError("--gpus/--models", "give exactly one of --gpus LIST or --models LIST")
    if args.engine is None:
        from vramplan.cli.compare_ranks import run_ranks, wants_ranks

        if wants_ranks(args):
            return run_ranks(args)
    engine_args = engine_namespace(args)
    if engine_args is not None:
        return run_engine(args, engine_args)
    run_config = run_config_from_args(args)
    title, first, subjects = _subjects(args)
    rows = [compare_row(name, model, gpu, run_config, margin_from_args(args)) for name, model, gpu in subjects]
    rows = [{field: row.get(field) for field in FIELDS} for row in rows]
    if args.json:
        print(json.dumps({"compare": first, "run": run_config.model_dump(mode="json"), "rows": rows}, indent=2))
    elif args.csv:
        _write_csv(first, FIELDS, rows)
    else:
        print(f"{title}: {run_config.method}, batch {run_config.micro_batch_size} x seq {run_config.seq_len}")
        print(render_rows(first, rows))
    return 0


def _write_csv(first: str, fields, rows: list[dict]) -> None:
    """Rows as CSV on stdout: the first column named `first`, bytes as plain integers, None as empty."""
    import csv
    import sys

    writer = csv.DictWriter(sys.stdout, fieldnames=[first, *fields[1:]], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({first: row["name"], **{f: "" if row[f] is None else row[f] for f in fields[1:]}})


def _subjects(args):
    """(title, first column, [(row name, model, gpu)]) for --gpus or --models, one GPU each."""
    title, first, subjects = subjects_with_counts(args)
    counted = next((name for name, _model, _gpu, count in subjects if count is not None), None)
    if counted is not None:
        from vramplan.errors import InputError

        flag = "--gpus" if args.gpus is not None else "--gpu"
        raise InputError(flag, f"{counted}: a GPU count plans the ranks of a training run; with --engine "
                               f"{args.engine} give the engine's own flags (vllm: --tensor-parallel-size)")
    return title, first, [(name, model, gpu) for name, model, gpu, _count in subjects]


def subjects_with_counts(args):
    """(title, first column, [(row name, model, gpu, GPU count or None)]): an entry `4xa100-40g`
    (or `--gpu 4xa100-40g` with --models) is the GPU a100-40g with the count 4; an entry without
    a prefix has --gpu-count's count (None when not given: one GPU)."""
    from vramplan.cli.parallel_flags import split_gpu_count
    from vramplan.cli.serve import engine_module
    from vramplan.gpus import get_gpu, list_gpus
    from vramplan.resolve import resolve_model

    def model_for(text):  # llama.cpp reads a .gguf file's header, as `serve` does
        return text if args.engine == "llama.cpp" and engine_module("llama.cpp").is_gguf_path(text) else resolve_model(text)

    default_count = getattr(args, "gpu_count", None)

    def counted(text: str) -> tuple[int | None, str]:
        count, name = split_gpu_count(text)
        return (default_count if count is None else count), name

    if args.gpus is not None:
        model = model_for(args.model)
        if args.gpus.strip() == "all":
            entries = [(default_count, gpu) for gpu in list_gpus()]
        else:
            entries = [(count, get_gpu(name)) for count, name in map(counted, split_list(args.gpus, "--gpus"))]
        subjects = [(gpu.key if count is None else f"{count}x{gpu.key}", model, gpu, count) for count, gpu in entries]
        return f"{getattr(model, 'name', model)} on each GPU", "gpu", subjects
    from vramplan.catalog import list_models

    count, gpu_name = counted(args.gpu)
    gpu = get_gpu(gpu_name)
    models = list_models() if args.models.strip() == "all" else [model_for(n) for n in split_list(args.models, "--models")]
    on = gpu.name if count is None else f"{count} x {gpu.name}"
    return f"each model on {on}", "model", [(getattr(m, "name", str(m)), m, gpu, count) for m in models]


def run_engine(args, engine_args) -> int:
    """`compare --engine`: one row of the engine's headline figures per GPU or model."""
    from vramplan.serve.headline import FIELDS, engine_rows, render_engine_rows

    title, first, subjects = _subjects(args)
    fields = FIELDS[args.engine]
    rows = engine_rows(args.engine, subjects, engine_args)
    if args.json:
        settings = {key: value for key, value in vars(engine_args).items() if key != "engine"}
        print(json.dumps({"compare": first, "engine": args.engine, "settings": settings, "rows": rows}, indent=2))
    elif args.csv:
        _write_csv(first, fields, rows)
    else:
        print(f"{title}: serving with {args.engine}")
        print(render_rows(first, rows) if args.engine == "hf" else render_engine_rows(args.engine, first, rows))
    return 0


def render_rows(first: str, rows: list[dict]) -> str:
    def size(value):
        return "-" if value is None else gib(value)

    header = [first, "verdict", "peak GiB", "needs GiB", "of GiB", "headroom", "max batch", "max seq"]
    body = [[row["name"], row["verdict"], size(row["peak_allocated_bytes"]), size(row["required_bytes"]),
             size(row["capacity_bytes"]), size(row["headroom_bytes"]),
             "-" if row["max_micro_batch"] is None else str(row["max_micro_batch"]),
             _seq_cell(row)] for row in rows]
    text = table(header, body, align_right_from=2)
    notes = [f"note: {row['name']}: {row['note']}" for row in rows if row["note"]]
    if any(_beyond_context(row) for row in rows):
        notes.append("note: * memory allows more tokens than the model's context window (max_position_embeddings)")
    return "\n".join([text, *notes])


def _beyond_context(row: dict) -> bool:
    return row.get("max_seq_len") is not None and row["max_seq_len"] > row["context_window"]


def _seq_cell(row: dict) -> str:
    if row.get("max_seq_len") is None:
        return "-"
    return f"{row['max_seq_len']}*" if _beyond_context(row) else str(row["max_seq_len"])
