"""`vramplan max {batch,seq,rank}`: the largest micro-batch, sequence length or LoRA rank that fits."""
from __future__ import annotations

import argparse
import json

from vramplan.present import describe_run, gib

HELP = "the largest micro-batch, sequence length or LoRA rank that fits (solved, not guessed)"
EPILOG = """examples:
  vramplan max batch --model 13b --gpu t4
  vramplan max seq --model llama-3.1-8b --gpu a10g --batch 2
  vramplan max rank --model 7b --gpu rtx3060 --seq 1024 --json
the answer fits and answer + 1 does not (or the answer is --limit).
exit code: 0 something fits, 1 not even 1 fits, 2 bad input"""

DIMENSIONS = {
    "batch": ("micro_batch_size", "micro-batch", 4096),
    "seq": ("seq_len", "sequence length", 1_048_576),
    "rank": ("lora_rank", "LoRA rank", 4096),
}


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_margin_argument, add_model_gpu_arguments
    from vramplan.cli.run_flags import add_run_arguments, bounded_int
    from vramplan.specs.bounds import RUN_BOUNDS

    parser = subparsers.add_parser("max", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dimension", choices=list(DIMENSIONS), metavar="{batch,seq,rank}",
                        help="what to maximize: batch (micro-batch size), seq (sequence length) or rank (LoRA rank)")
    add_model_gpu_arguments(parser)
    parser.add_argument("--limit", type=bounded_int("--limit", 1, max(RUN_BOUNDS.values())), default=None, metavar="N",
                        help="largest value to consider (default: 4096 for batch and rank, 1048576 for seq)")
    add_margin_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_run_arguments(parser)


def run(args) -> int:
    from vramplan.errors import InputError
    from vramplan.estimate import plan
    from vramplan.cli.fit import margin_from_args, specs_from_args
    from vramplan.solvers import max_size

    model, gpu, run_config = specs_from_args(args)
    margin_bytes = margin_from_args(args)
    field, label, default_limit = DIMENSIONS[args.dimension]
    limit = default_limit if args.limit is None else args.limit
    if limit < 1:
        raise InputError("--limit", f"must be at least 1 (got {limit})")
    from vramplan.specs.bounds import RUN_BOUNDS, bound_message

    if limit > RUN_BOUNDS[field]:  # an answer past the field's bound would be a run `fit` refuses
        raise InputError("--limit", f"for max {args.dimension} {bound_message(RUN_BOUNDS[field])}")
    if args.dimension == "rank" and not run_config.uses_lora:
        raise InputError("--method", f"max rank needs a LoRA method (qlora or lora), got {run_config.method}")
    value = max_size(args.dimension, model, gpu, run_config, limit=limit, margin_bytes=margin_bytes)
    at_value = plan(model, gpu, run_config.model_copy(update={field: value}), margin_bytes=margin_bytes) \
        if value else None
    above = plan(model, gpu, run_config.model_copy(update={field: value + 1}), margin_bytes=margin_bytes) \
        if value < limit else None
    if args.json:
        print(json.dumps({
            "dimension": args.dimension, "field": field, "value": value, "limit": limit,
            "model": model.name, "gpu": gpu.key, "capacity_bytes": gpu.capacity_bytes,
            "required_bytes": at_value.required_bytes if at_value else None,
            "headroom_bytes": at_value.headroom_bytes if at_value else None,
            "next_required_bytes": above.required_bytes if above else None,
            "margin_bytes": margin_bytes,
            "context_window": model.max_position_embeddings,
            "run": run_config.model_dump(mode="json"),
        }, indent=2))
        return 0 if value else 1
    reference = at_value or plan(model, gpu, run_config)
    print(f"{model.name} on {gpu.name}: {describe_run(reference)}")
    if not value:
        print(f"nothing fits: even {label} 1 needs {gib(above.required_bytes)} GiB of {gib(gpu.capacity_bytes)} GiB")
        return 1
    limit_note = " (the --limit)" if value == limit else ""
    kept = f" keeping {gib(margin_bytes)} GiB free" if margin_bytes else ""
    print(f"largest {label} that fits{kept}: {value}{limit_note}")
    print(f"  at {value}: needs {gib(at_value.required_bytes)} of {gib(gpu.capacity_bytes)} GiB, "
          f"headroom {gib(at_value.headroom_bytes)} GiB")
    if above is not None:
        print(f"  at {value + 1}: needs {gib(above.required_bytes)} GiB: does not fit")
    if args.dimension == "seq" and value > model.max_position_embeddings:
        print(f"note: memory allows {value} tokens, but {model.name}'s context window is "
              f"{model.max_position_embeddings} (max_position_embeddings); longer needs RoPE scaling")
    return 0
