"""`vramplan fit`: the verdict, the peak, the headroom and where every byte goes."""
from __future__ import annotations

import argparse
import json

from vramplan.components import label
from vramplan.present import describe_run, gib, table
from vramplan.stack.notes import stack_line

HELP = "will this run fit? verdict, peak, headroom and a per-component table"
EPILOG = """examples:
  vramplan fit --model 13b --gpu t4
  vramplan fit --model llama-3.1-8b --gpu 3090 --seq 2048 --batch 4
  vramplan fit --model ./my-model/config.json --gpu 24GiB --method lora --json
  vramplan fit --model llama-3.1-70b --gpu a100-40g --gpus 4 --strategy fsdp --method lora
  vramplan fit --model 70b --gpu 8xa100-80g --strategy zero3 --offload optimizer --method full --host-ram 1TiB
exit code: 0 fits, 1 does not fit, 2 bad input"""


def add_model_gpu_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default="13b",
                        help="catalog name or alias, config.json / model folder path, or local HF cache id (default: 13b)")
    parser.add_argument("--gpu", "-g", default="t4",
                        help="GPU profile name, a TOML profile path, or a size like 24GiB (default: t4)")


def add_margin_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--margin", default=None, metavar="SIZE",
                        help="keep this much memory free: a run fits only with SIZE to spare "
                             "(same sizes as --gpu: 1GiB, 500MiB, 2GB; default 0)")


# --emit target -> (module, function(model, gpu, run, breakdown) -> text); imported only when asked for
EMITTERS = {
    "hf": ("vramplan.emit_hf", "hf_snippet"),
    "trl": ("vramplan.emit_trl", "trl_snippet"),
    "llama-factory": ("vramplan.emit_llama_factory", "llama_factory_yaml"),
    "torchtune": ("vramplan.emit_torchtune", "torchtune_command"),
    "axolotl": ("vramplan.emit_axolotl", "axolotl_yaml"),
}
# multi-GPU --emit targets: vramplan.emit_parallel.emit_parallel(target, model, gpu, run, parallel, breakdown)
PARALLEL_EMITTERS = ("accelerate", "deepspeed")


def margin_from_args(args) -> int:
    from vramplan.estimate import margin_bytes_from

    return margin_bytes_from(getattr(args, "margin", None))


def add_parser(subparsers) -> None:
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("fit", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    add_margin_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help="print the full Breakdown as JSON (with --simulate, the simulation under 'simulation')")
    parser.add_argument("--emit", choices=[*EMITTERS, *PARALLEL_EMITTERS], default=None,
                        help="print this plan as a ready-to-paste recipe instead of the table: hf (transformers/peft "
                             "snippet), trl (SFTTrainer script), llama-factory / axolotl (YAML config), torchtune "
                             "(config overrides for its bundled recipe), accelerate (accelerate config and launch "
                             "lines; with the DeepSpeed JSON under zero*), deepspeed (DeepSpeed JSON, zero* only)")
    parser.add_argument("--simulate", action="store_true",
                        help="also run one step of the real HF architecture on fake tensors (needs torch + "
                             "transformers; a few seconds) and print its peak and live set beside the plan")
    add_run_arguments(parser)
    from vramplan.cli.parallel_flags import add_parallel_arguments

    add_parallel_arguments(parser)


def specs_from_args(args):
    """(ModelSpec, GPUSpec, RunConfig) from --model, --gpu and the run flags. A GPU count prefix
    (`--gpu 4xa100-40g`) is for commands with the multi-GPU flags (fit); others plan one GPU."""
    from vramplan.cli.parallel_flags import split_gpu_count
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.errors import InputError
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model

    count, gpu_name = split_gpu_count(args.gpu)
    if count is not None and not hasattr(args, "strategy"):
        raise InputError("--gpu", f"{args.gpu}: this command plans one GPU; per-rank plans are "
                                  f"`vramplan fit --gpu {gpu_name} --gpus {count} --strategy ...`")
    return resolve_model(args.model), get_gpu(gpu_name), run_config_from_args(args)


def plan_from_args(args):
    from vramplan.estimate import plan

    return plan(*specs_from_args(args), margin_bytes=margin_from_args(args))


def simulation_data(result) -> dict:
    """The simulation as JSON-ready data: peak, phase peaks and the live set by category per phase."""
    return {
        "peak_bytes": result.peak_bytes, "peak_phase": result.peak_phase,
        "phase_peaks": dict(result.phase_peaks), "categories_at_peak": dict(result.categories_at_peak),
        "phase_categories": {phase: dict(parts) for phase, parts in result.phase_categories.items()},
        "paged_optimizer_bytes": result.paged_optimizer_bytes,
        "layers_simulated": list(result.layers_simulated), "seconds": result.seconds,
    }


def breakdown_json(breakdown, simulation=None, cluster=None) -> str:
    """The Breakdown (of the worst rank), its components, then the per-rank view's additions
    (`ClusterPlan.json_additions`; one GPU when `cluster` is None)."""
    from vramplan.specs.cluster import ClusterPlan

    data = breakdown.model_dump(mode="json")
    data["components"] = breakdown.components()
    data |= (cluster or ClusterPlan.single(breakdown)).json_additions()
    if simulation is not None:
        data["simulation"] = simulation_data(simulation)
    return json.dumps(data, indent=2)


def render(breakdown) -> str:
    verdict = "memory alone" if breakdown.blocked_by else breakdown.verdict
    margin = f", keeping {gib(breakdown.margin_bytes)} GiB free" if breakdown.margin_bytes else ""
    lines = [
        f"{breakdown.model} on {breakdown.gpu}: {describe_run(breakdown)}; stack: {stack_line(breakdown.stack)}",
        *([f"CANNOT RUN HERE: {breakdown.blocked_by}"] if breakdown.blocked_by else []),
        f"{verdict}: needs {gib(breakdown.required_bytes)} GiB of {gib(breakdown.capacity_bytes)} GiB{margin}, "
        f"headroom {gib(breakdown.headroom_bytes)} GiB",
        *([f"why: {breakdown.reason}"] if breakdown.reason else []),
        f"predicted peak (torch.cuda.max_memory_allocated): {gib(breakdown.peak_allocated_bytes)} GiB "
        f"during {breakdown.peak_phase.replace('_', ' ')}",
        "",
    ]
    rows = [[label(name), gib(value)] for name, value in breakdown.components().items() if value]
    rows.append(["total needed", gib(breakdown.required_bytes)])
    lines.append(table(["component at the peak", "GiB"], rows))
    if breakdown.warnings or breakdown.notes:
        lines.append("")
        lines.extend(f"warning: {warning}" for warning in breakdown.warnings)
        lines.extend(f"note: {note}" for note in breakdown.notes)
    return "\n".join(lines)


def run(args) -> int:
    from vramplan.cli.parallel_flags import parallel_from_args
    from vramplan.estimate import plan

    model, gpu, run_config = specs_from_args(args)
    margin_bytes = margin_from_args(args)
    parallel = parallel_from_args(args)
    if not parallel.is_single:
        return run_ranks(args, model, gpu, run_config, parallel, margin_bytes)
    breakdown = plan(model, gpu, run_config, margin_bytes=margin_bytes)
    if args.json and not args.emit:
        simulation = None
        if args.simulate:
            from vramplan.simulate.engine import simulate

            simulation = simulate(model, gpu, run_config)
        print(breakdown_json(breakdown, simulation))
        return 0 if breakdown.fits else 1
    if args.emit in PARALLEL_EMITTERS:
        from vramplan.emit_parallel import emit_parallel

        print(emit_parallel(args.emit, model, gpu, run_config, None, breakdown), end="")
        return 0 if breakdown.fits else 1
    if args.emit:
        import importlib

        module, function = EMITTERS[args.emit]
        emit = getattr(importlib.import_module(module), function)
        print(emit(model, gpu, run_config, breakdown), end="")
        return 0 if breakdown.fits else 1
    print(render(breakdown))
    if args.simulate:
        from vramplan.extras import require_extra

        require_extra("torch", "--simulate")
        from vramplan.simulate.report import render_simulation

        print()
        print(render_simulation(model, gpu, run_config, breakdown))
    from vramplan.advice import render_fit_advice

    advice_text = render_fit_advice(model, gpu, run_config, breakdown.fits, margin_bytes=margin_bytes) \
        if not breakdown.blocked_by else ""
    if advice_text:
        print()
        print(advice_text)
    return 0 if breakdown.fits else 1


def run_ranks(args, model, gpu, run_config, parallel, margin_bytes: int) -> int:
    """fit on more than one GPU: the worst rank's table, the per-rank and host tables (or JSON / --emit)."""
    from vramplan.cli.fit_ranks import render_cluster
    from vramplan.cli.parallel_flags import host_ram_from_args
    from vramplan.errors import InputError
    from vramplan.estimate import plan_ranks

    if args.simulate:
        raise InputError("--simulate", "simulates one GPU; the per-rank simulator is "
                                       "benchmarks/distributed_agreement.py (FSDP2 on a fake process group)")
    host_ram, ram_source = host_ram_from_args(args, parallel)
    cluster = plan_ranks(model, gpu, run_config, parallel=parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram)
    worst = cluster.worst_rank.breakdown
    code = 0 if cluster.fits else 1
    if args.json and not args.emit:
        print(breakdown_json(worst, cluster=cluster))
        return code
    if args.emit in PARALLEL_EMITTERS:
        from vramplan.emit_parallel import emit_parallel

        print(emit_parallel(args.emit, model, gpu, run_config, parallel, worst), end="")
        return code
    if args.emit:  # a framework recipe: the same script on every rank, launched by the accelerate/torchrun line
        import importlib

        module, function = EMITTERS[args.emit]
        print(getattr(importlib.import_module(module), function)(model, gpu, run_config, worst), end="")
        return code
    print(render_cluster(cluster, parallel, gpu.name, ram_source))
    print()
    print(f"worst rank ({cluster.worst_rank.name}):")
    print(render(worst))
    from vramplan.distributed.advice import rank_advice, render_rank_advice

    advice_text = "" if worst.blocked_by else render_rank_advice(
        rank_advice(model, gpu, run_config, parallel, cluster, margin_bytes=margin_bytes, host_ram_bytes=host_ram),
        parallel)
    if advice_text:
        print()
        print(advice_text)
    return code
