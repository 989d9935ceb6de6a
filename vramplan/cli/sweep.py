"""`vramplan sweep`: every combination of batch x seq x rank x method, as a table, CSV or JSON."""
from __future__ import annotations

import argparse
import json

HELP = "sweep grids of batch, seq, rank and method through the model; table, --csv or --json"
EPILOG = """examples:
  vramplan sweep --model 8b --gpu a10g --batch 1,2,4,8 --seq 512,1024,2048
  vramplan sweep --model 13b --gpu t4 --rank 8,16,64 --method qlora,lora --fits-only
  vramplan sweep --model 7b --gpu 24GiB --batch 1,2,4,8 --seq 512,1024,2048 --rank 8,16 --csv > grid.csv
lists are comma-separated; a list left out uses the run's own value (batch 1, seq 512, rank 16, qlora)."""

GRID_FLAGS = {
    "batch": ("micro_batch_size", "micro-batch sizes, e.g. 1,2,4,8"),
    "seq": ("seq_len", "sequence lengths, e.g. 512,1024,2048"),
    "rank": ("lora_rank", "LoRA ranks, e.g. 8,16,64 (ignored by full and inference)"),
}


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_model_gpu_arguments
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("sweep", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    grid = parser.add_argument_group("grid (comma-separated lists)")
    for flag, (_field, text) in GRID_FLAGS.items():
        grid.add_argument(f"--{flag}", default=None, metavar="LIST", help=text)
    grid.add_argument("--method", default=None, metavar="LIST", help="methods, e.g. qlora,lora,full,inference")
    parser.add_argument("--fits-only", action="store_true", help="keep only the configurations that fit")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print rows as JSON")
    output.add_argument("--csv", action="store_true", help="print rows as CSV (bytes)")
    add_run_arguments(parser, skip=("micro_batch_size", "seq_len", "lora_rank", "method"))


def parse_int_list(text: str | None, flag: str) -> list[int] | None:
    """'1,2,4' -> [1, 2, 4]; a bad item is an InputError naming the flag (ASCII digits: `vramplan.text`)."""
    from vramplan.errors import InputError
    from vramplan.text import parse_int, shown

    if text is None:
        return None
    values = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = parse_int(item, flag)
        except InputError:
            value = 0
        if value <= 0:
            raise InputError(flag, f"'{shown(item, 40)}' is not a positive integer; give a comma-separated list like 1,2,4")
        values.append(value)
    return values


def parse_methods(text: str | None) -> list[str] | None:
    import typing

    from vramplan.errors import InputError
    from vramplan.specs.run import Method

    if text is None:
        return None
    allowed = typing.get_args(Method)
    methods = [part.strip() for part in text.split(",")]
    for method in methods:
        if method not in allowed:
            raise InputError("--method", f"'{method}' is not one of {', '.join(allowed)}")
    return methods


def run(args) -> int:
    from vramplan.cli.fit import specs_from_args
    from vramplan.errors import InputError
    from vramplan.present import SHORT_FLAGS, flag_name
    from vramplan.sweep import sweep

    grid = {flag: parse_int_list(getattr(args, flag), f"--{flag}") for flag in GRID_FLAGS}
    methods = parse_methods(args.method)
    # --method here is a list, not the RunConfig field: the run flags must not see it.
    model, gpu, run_config = specs_from_args(argparse.Namespace(**{**vars(args), "method": None}))
    for method in methods or ():  # each method must be valid with the other flags (e.g. --format)
        from vramplan.memory.dtypes import resolve_dtypes

        try:
            resolve_dtypes(run_config.model_copy(update={"method": method}), gpu, model)
        except InputError as exc:
            flags = SHORT_FLAGS.get(exc.field, (flag_name(exc.field),))
            raise InputError(f"--method {method}", f"{flags[0]}: {exc.message}") from None
    result = sweep(model, gpu, run_config, batch=grid["batch"], seq=grid["seq"], rank=grid["rank"], method=methods)
    records = result.records()
    if args.fits_only:
        records = [row for row in records if row["fits"]]
    if args.json:
        print(json.dumps({"model": result.model, "gpu": result.gpu, "capacity_bytes": result.capacity_bytes,
                          "run": run_config.model_dump(mode="json"), "rows": records}, indent=2))
        return 0
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=list(result.columns))
    if args.csv:
        print(frame.to_csv(index=False), end="")
        return 0
    print(f"{result.model} on {result.gpu} ({result.capacity_bytes / 2**30:.2f} GiB): "
          f"{len(records)} of {len(result)} configurations shown")
    if frame.empty:
        print("no configuration fits")
        return 0
    shown = pd.DataFrame({
        "method": frame["method"], "batch": frame["micro_batch_size"], "seq": frame["seq_len"],
        "rank": frame["lora_rank"].map(lambda r: str(r) if r else "-"),
        "peak GiB": (frame["peak_allocated_bytes"] / 2**30).map("{:.2f}".format),
        "needs GiB": (frame["required_bytes"] / 2**30).map("{:.2f}".format),
        "headroom GiB": (frame["headroom_bytes"] / 2**30).map("{:.2f}".format),
        "fits": frame["fits"].map({True: "yes", False: "no"}),
    })
    print(shown.to_string(index=False))
    return 0
