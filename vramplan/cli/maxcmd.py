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
  vramplan max batch --model llama-3.1-70b --gpu a100-40g --gpus 8 --strategy fsdp --method lora
with --gpus/--strategy the answer is per rank: every rank fits at it (the host RAM is reported, not solved).
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
    from vramplan.cli.parallel_flags import add_parallel_arguments

    add_parallel_arguments(parser)


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
    from vramplan.cli.parallel_flags import parallel_from_args

    parallel = parallel_from_args(args)
    if not parallel.is_single:
        return run_ranks(args, model, gpu, run_config, parallel, limit, margin_bytes)
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
    print("\n".join(answer_lines(label, value, limit, margin_bytes, gpu.capacity_bytes, at_value, above)))
    print_context_note(args.dimension, value, model)
    return 0


def answer_lines(label: str, value: int, limit: int, margin_bytes: int, capacity_bytes: int, at, above,
                 per_rank: bool = False) -> list[str]:
    """'largest ... that fits: N' and the needs at N and N + 1 (`at`, `above`: Breakdowns, the worst rank's)."""
    limit_note = " (the --limit)" if value == limit else ""
    kept = f" keeping {gib(margin_bytes)} GiB free" if margin_bytes else ""
    needs = "the worst rank needs" if per_rank else "needs"
    lines = [f"largest {label}{' per rank' if per_rank else ''} that fits{kept}: {value}{limit_note}",
             f"  at {value}: {needs} {gib(at.required_bytes)} of {gib(capacity_bytes)} GiB, "
             f"headroom {gib(at.headroom_bytes)} GiB"]
    if above is not None:
        lines.append(f"  at {value + 1}: {needs} {gib(above.required_bytes)} GiB: does not fit")
    return lines


def print_context_note(dimension: str, value: int, model) -> None:
    if dimension == "seq" and value > model.max_position_embeddings:
        print(f"note: memory allows {value} tokens, but {model.name}'s context window is "
              f"{model.max_position_embeddings} (max_position_embeddings); longer needs RoPE scaling")


def run_ranks(args, model, gpu, run_config, parallel, limit: int, margin_bytes: int) -> int:
    """max on more than one GPU: the largest value at which every rank fits (`solve.max_per_rank`)."""
    from vramplan.cli.parallel_flags import host_ram_from_args
    from vramplan.distributed.solve import max_per_rank
    from vramplan.estimate import plan_ranks

    field, label, _default = DIMENSIONS[args.dimension]
    host_ram, ram_source = host_ram_from_args(args, parallel)
    value = max_per_rank(args.dimension, model, gpu, run_config, parallel, limit=limit, margin_bytes=margin_bytes)

    def cluster_at(size: int):
        return plan_ranks(model, gpu, run_config.model_copy(update={field: size}), parallel=parallel,
                          margin_bytes=margin_bytes, host_ram_bytes=host_ram)

    at_value = cluster_at(value) if value else None
    above = cluster_at(value + 1) if value < limit else None
    worst_at = at_value.worst_rank.breakdown if at_value else None
    worst_above = above.worst_rank.breakdown if above else None
    if args.json:
        print(json.dumps({
            "dimension": args.dimension, "field": field, "value": value, "limit": limit, "per_rank": True,
            "model": model.name, "gpu": gpu.key, "capacity_bytes": gpu.capacity_bytes,
            "strategy": parallel.resolved_strategy, "gpus": parallel.gpus, "nodes": parallel.nodes,
            "world_size": parallel.world_size,
            "required_bytes": worst_at.required_bytes if worst_at else None,
            "headroom_bytes": worst_at.headroom_bytes if worst_at else None,
            "next_required_bytes": worst_above.required_bytes if worst_above else None,
            "host": at_value.host.as_data() if at_value else None,
            "margin_bytes": margin_bytes, "context_window": model.max_position_embeddings,
            "run": run_config.model_dump(mode="json"), "parallel": parallel.model_dump(mode="json"),
        }, indent=2))
        return 0 if value else 1
    reference = at_value or cluster_at(1)
    nodes = f"{parallel.nodes} nodes x {parallel.gpus}" if parallel.nodes > 1 else f"{parallel.gpus}"
    print(f"{nodes} x {gpu.name}, {parallel.resolved_strategy} ({parallel.world_size} ranks): "
          f"{describe_run(reference.worst_rank.breakdown)}")
    if not value:
        print(f"nothing fits: even {label} 1 needs {gib(reference.worst_rank.breakdown.required_bytes)} GiB "
              f"per rank of {gib(gpu.capacity_bytes)} GiB")
        return 1
    print("\n".join(answer_lines(label, value, limit, margin_bytes, gpu.capacity_bytes, worst_at, worst_above,
                                 per_rank=True)))
    host = at_value.host
    if host.host_ram_bytes is not None:
        verdict = "fits" if host.fits else "DOES NOT FIT"
        print(f"  host RAM of one node ({ram_source}): needs {gib(host.required_bytes)} of "
              f"{gib(host.host_ram_bytes)} GiB: {verdict}")
    print_context_note(args.dimension, value, model)
    return 0
