"""`vramplan fit`: the verdict, the peak, the headroom and where every byte goes."""
from __future__ import annotations

import argparse
import json

from vramplan.cli.format import COMPONENT_LABELS, describe_run, gib, table

HELP = "will this run fit? verdict, peak, headroom and a per-component table"
EPILOG = """examples:
  vramplan fit --model 13b --gpu t4
  vramplan fit --model llama-3.1-8b --gpu 3090 --seq 2048 --batch 4
  vramplan fit --model ./my-model/config.json --gpu 24GiB --method lora --json
exit code: 0 fits, 1 does not fit, 2 bad input"""


def add_model_gpu_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default="13b",
                        help="catalog name or alias, config.json / model folder path, or local HF cache id (default: 13b)")
    parser.add_argument("--gpu", "-g", default="t4",
                        help="GPU profile name, a TOML profile path, or a size like 24GiB (default: t4)")


def add_parser(subparsers) -> None:
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("fit", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the full Breakdown as JSON")
    parser.add_argument("--emit", choices=["hf"], default=None,
                        help="print a ready-to-paste transformers/peft snippet (BitsAndBytesConfig, LoraConfig, "
                             "TrainingArguments) for this plan instead of the table")
    parser.add_argument("--simulate", action="store_true",
                        help="also run one step of the real HF architecture on fake tensors (needs torch + "
                             "transformers; a few seconds) and print its peak and live set beside the plan")
    add_run_arguments(parser)


def specs_from_args(args):
    """(ModelSpec, GPUSpec, RunConfig) from --model, --gpu and the run flags."""
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model

    return resolve_model(args.model), get_gpu(args.gpu), run_config_from_args(args)


def plan_from_args(args):
    from vramplan.estimate import plan

    return plan(*specs_from_args(args))


def breakdown_json(breakdown) -> str:
    data = breakdown.model_dump(mode="json")
    data["components"] = breakdown.components()
    return json.dumps(data, indent=2)


def render(breakdown) -> str:
    verdict = "FITS" if breakdown.fits else "DOES NOT FIT"
    lines = [
        f"{breakdown.model} on {breakdown.gpu}: {describe_run(breakdown)}",
        f"{verdict}: needs {gib(breakdown.required_bytes)} GiB of {gib(breakdown.capacity_bytes)} GiB, "
        f"headroom {gib(breakdown.headroom_bytes)} GiB",
        f"predicted peak (torch.cuda.max_memory_allocated): {gib(breakdown.peak_allocated_bytes)} GiB "
        f"during {breakdown.peak_phase.replace('_', ' ')}",
        "",
    ]
    rows = [[COMPONENT_LABELS[name], gib(value)] for name, value in breakdown.components().items() if value]
    rows.append(["total needed", gib(breakdown.required_bytes)])
    lines.append(table(["component at the peak", "GiB"], rows))
    if breakdown.notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in breakdown.notes)
    return "\n".join(lines)


def run(args) -> int:
    from vramplan.estimate import plan

    model, gpu, run_config = specs_from_args(args)
    breakdown = plan(model, gpu, run_config)
    if args.json and not args.emit:
        print(breakdown_json(breakdown))
        return 0 if breakdown.fits else 1
    if args.emit == "hf":
        from vramplan.emit_hf import hf_snippet

        print(hf_snippet(model, gpu, run_config, breakdown), end="")
        return 0 if breakdown.fits else 1
    print(render(breakdown))
    if args.simulate:
        from vramplan.extras import require_extra

        require_extra("torch", "--simulate")
        from vramplan.simulate.report import render_simulation

        print()
        print(render_simulation(model, gpu, run_config, breakdown))
    from vramplan.advice import advise, render_advice

    advice_text = render_advice(advise(model, gpu, run_config), breakdown.fits)
    if advice_text:
        print()
        print(advice_text)
    return 0 if breakdown.fits else 1
