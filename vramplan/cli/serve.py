"""`vramplan serve`: will this model start in an inference engine, with the engine's own flags?

Engines live in `vramplan/serve/<engine>.py` and are imported when the parser is built. "llama.cpp" is
registered only where `vramplan.serve.llamacpp` exists (it is built on its own branch; the registry picks it
up once merged). A flag that belongs to another engine than --engine is an error naming both.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json

HELP = "will it start in vLLM (or llama.cpp, or HF generate)? KV pool, blocks, concurrency, the start-up error"
EPILOG = """examples:
  vramplan serve --engine vllm --model mistral-7b --format awq-4bit --gpu l4 --max-model-len 32768
  vramplan serve --engine vllm --model llama-3.1-8b --gpu l4 --kv-cache-dtype fp8 --json
  vramplan serve --engine vllm --model qwen2.5-7b --gpu a10g --plot concurrency.png --plot-gpus l4,a10g,4090
exit code: 0 starts, 1 does not start, 2 bad input"""

ENGINES = {"vllm": "vramplan.serve.vllm", "hf": "vramplan.serve.hf"}
if importlib.util.find_spec("vramplan.serve.llamacpp") is not None:
    ENGINES["llama.cpp"] = "vramplan.serve.llamacpp"


def engine_module(name: str):
    return importlib.import_module(ENGINES[name])


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_model_gpu_arguments

    parser = subparsers.add_parser("serve", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    parser.add_argument("--engine", "-e", choices=tuple(ENGINES), default="vllm", help="inference engine (default vllm)")
    parser.add_argument("--format", default=None, metavar="FORMAT",
                        help="weight format: bf16, fp16, awq-4bit, gptq-4bit, gptq-8bit, nf4, int8, gguf-q4_k_m, ... "
                             "(default: the checkpoint's)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--host-ram", default=None, metavar="SIZE", help="system RAM for what the GPU does not hold "
                        "(llama.cpp offload; sizes like 64GiB)")
    parser.add_argument("--plot", default=None, metavar="PATH",
                        help="also draw concurrent requests against max-model-len (.png, .svg, .pdf; vllm engine)")
    parser.add_argument("--plot-gpus", default=None, metavar="GPUS", help="comma-separated GPUs for --plot (default: --gpu)")
    owners = {}
    for engine in ENGINES:
        before = len(parser._actions)
        engine_module(engine).add_arguments(parser)
        owners[engine] = [(action.dest, action.option_strings[0]) for action in parser._actions[before:]]
    parser.set_defaults(serve_flag_owners=owners,
                        serve_parser_defaults={action.dest: action.default for action in parser._actions})


def check_engine_flags(args, parser_defaults: dict) -> None:
    """A flag of another engine is an error: `--n-gpu-layers belongs to --engine llama.cpp, not vllm`."""
    from vramplan.errors import InputError

    for engine, flags in args.serve_flag_owners.items():
        if engine == args.engine:
            continue
        for dest, flag in flags:
            if getattr(args, dest, None) != parser_defaults.get(dest):
                raise InputError(flag, f"belongs to --engine {engine}, not {args.engine}")


def host_ram_bytes(args) -> int | None:
    """--host-ram in bytes (same sizes as --gpu: 64GiB, 128GB); only llama.cpp offloads to host RAM."""
    from vramplan.errors import InputError
    from vramplan.gpus import parse_size

    if args.host_ram is None:
        return None
    if args.engine != "llama.cpp":
        raise InputError("--host-ram", f"{args.engine} keeps weights and KV cache on the GPU here (CPU offload and "
                         "swap are not modelled): use it with --engine llama.cpp")
    size = parse_size(args.host_ram)
    if size is None or size <= 0:
        raise InputError("--host-ram", f"a size like 64GiB, 128GB or 65536MiB (got {args.host_ram!r})")
    return size


def _draw_plot(args, model, settings) -> None:
    from vramplan.cli.plot import split_list
    from vramplan.gpus import get_gpu
    from vramplan.plots.output import FIGURE_FORMATS, output_path, save_figure
    from vramplan.plots.serve_concurrency import concurrency_curves, concurrency_figure

    output_path(args.plot, FIGURE_FORMATS, "--plot")
    gpus = [get_gpu(name) for name in split_list(args.plot_gpus, "--plot-gpus")] if args.plot_gpus else [get_gpu(args.gpu)]
    path = save_figure(concurrency_figure(concurrency_curves(model, gpus, settings)), args.plot, "--plot")
    print(f"wrote {path}")


def _run_vllm(args, model, gpu) -> int:
    from vramplan.errors import InputError
    from vramplan.gpus import list_gpus
    from vramplan.serve import vllm
    from vramplan.serve.vllm_solvers import advise, smallest_gpu
    from vramplan.serve.vllm_text import render_advice

    settings = vllm.settings_from_args(args)
    plan = vllm.plan_vllm(model, gpu, settings)
    gpus = list_gpus()
    changes = advise(model, gpu, settings, gpus)
    smallest = smallest_gpu(model, gpus, settings)
    if args.plot:
        _draw_plot(args, model, settings)
    if args.json:
        data = plan.to_json()
        data["smallest_gpu"] = smallest.key if smallest else None
        data["advice"] = [change.__dict__ for change in changes]
        print(json.dumps(data, indent=2))
        return 0 if plan.fits else 1
    print(plan.render_text())
    print(f"smallest GPU profile it starts on: {smallest.key if smallest else 'none'}")
    advice = render_advice(changes)
    if advice:
        print()
        print(advice)
    return 0 if plan.fits else 1


def run(args) -> int:
    from vramplan.errors import InputError
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model

    check_engine_flags(args, args.serve_parser_defaults)
    args.host_ram_bytes = host_ram_bytes(args)
    gpu = get_gpu(args.gpu)
    if args.engine == "llama.cpp" and engine_module("llama.cpp").is_gguf_path(args.model):
        model = args.model  # a .gguf file: its header says what llama.cpp loads
    else:
        model = resolve_model(args.model)
    if args.engine == "vllm":
        return _run_vllm(args, model, gpu)
    if args.plot:
        raise InputError("--plot", "draws the vLLM pool: use it with --engine vllm")
    plan = engine_module(args.engine).plan_from_args(model, gpu, args)
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.render_text())
    return 0 if plan.fits else 1
