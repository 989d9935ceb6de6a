"""`vramplan explain`: every component at the peak, its named terms with the numbers plugged in, the total.

The terms are the plan's own (`Breakdown.terms`, built by the memory functions): this shell
only formats them, so every printed product multiplies out to the printed bytes.
"""
from __future__ import annotations

import argparse
import json

from vramplan.present import component_terms, describe_run, gib, term_arithmetic

HELP = "explain each component of the plan: its formula and the numbers plugged in"
EPILOG = """examples:
  vramplan explain --model 13b --gpu t4
  vramplan explain --model llama-3.1-8b --gpu a10g --seq 4096 --loss-impl chunked
  vramplan explain --model 7b --gpu a100-80g --method inference --json"""


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_model_gpu_arguments
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("explain", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the components as JSON")
    add_run_arguments(parser)
    from vramplan.cli.parallel_flags import add_parallel_arguments

    add_parallel_arguments(parser)


def render_term(item: dict) -> str:
    """`name: formula = 2 x 4,096 x 2 B = 16,384 B`, the factors as the plan multiplied them."""
    return f"{item['name']}: {item['formula']}\n        = {term_arithmetic(item)} = {item['bytes']:,} B"


def run(args) -> int:
    from vramplan.cli.fit import specs_from_args
    from vramplan.cli.parallel_flags import parallel_from_args
    from vramplan.estimate import plan, plan_ranks

    model, gpu, run_config = specs_from_args(args)
    parallel = parallel_from_args(args)
    if parallel.is_single:
        result = plan(model, gpu, run_config)
    else:  # the worst rank's terms
        cluster = plan_ranks(model, gpu, run_config, parallel=parallel)
        result = cluster.worst_rank.breakdown
        print(f"{cluster.worst_rank.name} of {cluster.world_size} ({cluster.strategy}):")
    rows = component_terms(gpu, run_config, result)
    if args.json:
        print(json.dumps({"model": model.name, "gpu": gpu.key, "fits": result.fits, "peak_phase": result.peak_phase,
                          "peak_allocated_bytes": result.peak_allocated_bytes,
                          "required_bytes": result.required_bytes, "capacity_bytes": result.capacity_bytes,
                          "components": rows}, indent=2))
        return 0 if result.fits else 1
    verdict = "FITS" if result.fits else "DOES NOT FIT"
    print(f"{model.name} on {gpu.name}: {describe_run(result)}")
    print(f"{verdict}: needs {gib(result.required_bytes)} of {gib(result.capacity_bytes)} GiB; "
          f"peak {gib(result.peak_allocated_bytes)} GiB during {result.peak_phase.replace('_', ' ')}")
    for row in rows:
        print()
        print(f"{row['label']} = {gib(row['bytes'])} GiB ({row['bytes']:,} B)")
        for item in row["terms"]:
            print(f"    {render_term(item)}")
    print()
    nccl = " + NCCL buffers" if result.nccl_buffers_bytes else ""
    print(f"peak allocated = {result.peak_allocated_bytes:,} B; + allocator reserve + CUDA context{nccl} = "
          f"required {result.required_bytes:,} B ({gib(result.required_bytes)} GiB)")
    return 0 if result.fits else 1
