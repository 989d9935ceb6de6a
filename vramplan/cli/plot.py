"""`vramplan plot KIND --out FILE`: figures of plans (PNG, SVG or PDF by the file extension).

matplotlib and numpy are imported only when a plot is drawn, never at start-up.
"""
from __future__ import annotations

import argparse

HELP = "draw a figure (PNG/SVG/PDF): breakdown, fit-matrix, gpus-by-strategy, max-seq, seq-components, validation"
EPILOG = """examples:
  vramplan plot breakdown --model 13b --gpu t4 --seq 1024 --out plan.png
  vramplan plot fit-matrix --models 7b,13b,70b --gpus t4,3090,a100 --method qlora --out fit.svg
  vramplan plot gpus-by-strategy --model 70b --gpu a100-40g --method lora --host-ram 1TiB --out layouts.png
  vramplan plot max-seq --model 8b --gpus t4,3090,a100 --batches 1,2,4,8 --out max_seq.png
  vramplan plot seq-components --model llama-3.1-8b --gpu 4090 --out seq.pdf
  vramplan plot validation --results validation/results --out validation.png
the file type follows --out's extension: .png, .svg or .pdf; exit code 2 on bad input"""

DEFAULT_MATRIX_MODELS = "1b,3b,7b,8b,13b,70b"
DEFAULT_MATRIX_GPUS = "t4,3060,3090,4090,l4,a100-40g,a100,h100"
DEFAULT_CURVE_GPUS = "t4,3090,a100-40g,a100"
DEFAULT_GPU_COUNTS = "1,2,4,8,16,32"


def _add_kind(kinds, name: str, help_text: str, draw, *, model_gpu: bool = False):
    from vramplan.cli.fit import add_model_gpu_arguments

    parser = kinds.add_parser(name, help=help_text, description=help_text,
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    parser.add_argument("--out", "-o", required=True, metavar="FILE",
                        help="output file; .png, .svg or .pdf picks the format")
    if model_gpu:
        add_model_gpu_arguments(parser)
    parser.set_defaults(draw=draw)
    return parser


def add_parser(subparsers) -> None:
    from vramplan.cli.run_flags import add_run_arguments, bounded_int
    from vramplan.specs.bounds import RUN_BOUNDS

    parser = subparsers.add_parser("plot", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    bar = _add_kind(kinds, "breakdown", "stacked bar of one plan's components against the GPU capacity",
                    _draw_breakdown, model_gpu=True)
    add_run_arguments(bar)

    matrix = _add_kind(kinds, "fit-matrix", "model x GPU matrix: colour = headroom, text = max seq or batch",
                       _draw_fit_matrix)
    matrix.add_argument("--models", default=DEFAULT_MATRIX_MODELS,
                        help=f"comma-separated models, rows (default: {DEFAULT_MATRIX_MODELS})")
    matrix.add_argument("--gpus", default=DEFAULT_MATRIX_GPUS,
                        help=f"comma-separated GPUs, columns (default: {DEFAULT_MATRIX_GPUS})")
    matrix.add_argument("--cell", choices=("seq", "batch"), default="seq",
                        help="cell text: max sequence length at --batch, or max micro-batch at --seq (default: seq)")
    add_run_arguments(matrix)

    layouts = _add_kind(kinds, "gpus-by-strategy", "strategy x GPU count for one model and GPU: colour = every "
                        "rank fits or not, marker = host RAM too small, text = GiB one rank needs",
                        _draw_gpus_by_strategy, model_gpu=True)
    layouts.add_argument("--counts", default=DEFAULT_GPU_COUNTS, metavar="LIST",
                         help=f"comma-separated GPU counts, columns (default: {DEFAULT_GPU_COUNTS})")
    layouts.add_argument("--gpus-per-node", type=bounded_int("--gpus-per-node", 1, 1024), default=8, metavar="N",
                         help="GPUs in one node; a larger count is whole nodes of this many (default: 8)")
    layouts.add_argument("--host-ram", default=None, metavar="SIZE",
                         help="host RAM of one node (512GiB); default: this machine's RAM; 'unknown': no host marker")
    add_run_arguments(layouts)

    curves = _add_kind(kinds, "max-seq", "max sequence length vs micro-batch size, one curve per GPU", _draw_max_seq)
    curves.add_argument("--model", "-m", default="13b", help="model (default: 13b)")
    curves.add_argument("--gpus", default=DEFAULT_CURVE_GPUS, help=f"comma-separated GPUs (default: {DEFAULT_CURVE_GPUS})")
    curves.add_argument("--batches", default="1,2,4,8,16,32",
                        help="comma-separated micro-batch sizes (default: 1,2,4,8,16,32)")
    add_run_arguments(curves)

    sweep = _add_kind(kinds, "seq-components", "memory per component vs sequence length (the sweep replaces --seq)",
                      _draw_seq_components, model_gpu=True)
    sweep.add_argument("--seq-min", type=bounded_int("--seq-min", 1, RUN_BOUNDS["seq_len"]), default=128, metavar="N", help="shortest sequence (default: 128)")
    sweep.add_argument("--seq-max", type=bounded_int("--seq-max", 1, RUN_BOUNDS["seq_len"]), default=65536, metavar="N", help="longest sequence (default: 65536)")
    sweep.add_argument("--points", type=bounded_int("--points", 2, 2000), default=48, metavar="N", help="points in the sweep (default: 48)")
    add_run_arguments(sweep)

    validation = _add_kind(kinds, "validation", "predicted vs measured peak memory from the GPU validation CSVs",
                           _draw_validation)
    validation.add_argument("--results", nargs="+", metavar="PATH", default=None,
                            help="CSV files or folders (default: validation/results/ in the source tree)")
    validation.add_argument("--band", type=float, default=0.10, metavar="X",
                            help="error band as a fraction of measured (default: 0.10)")


def split_list(text: str, flag: str) -> list[str]:
    from vramplan.errors import InputError

    items = [part.strip() for part in str(text).split(",") if part.strip()]
    if not items:
        raise InputError(flag, "give at least one name, comma-separated")
    return items


def positive_ints(text: str, flag: str) -> list[int]:
    from vramplan.errors import InputError

    try:
        values = [int(part) for part in split_list(text, flag)]
    except ValueError:
        raise InputError(flag, f"give comma-separated whole numbers (got {text!r})") from None
    if min(values) < 1:
        raise InputError(flag, f"every value must be at least 1 (got {text!r})")
    return sorted(set(values))


def _models(text: str, flag: str):
    from vramplan.resolve import resolve_model

    return [resolve_model(name) for name in split_list(text, flag)]


def _gpus(text: str, flag: str):
    from vramplan.gpus import get_gpu

    return [get_gpu(name) for name in split_list(text, flag)]


def _draw_breakdown(args):
    from vramplan.cli.fit import plan_from_args
    from vramplan.plots import breakdown_figure

    return breakdown_figure(plan_from_args(args))


def _draw_fit_matrix(args):
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.plots import fit_matrix, fit_matrix_figure

    run = run_config_from_args(args)
    return fit_matrix_figure(fit_matrix(_models(args.models, "--models"), _gpus(args.gpus, "--gpus"), run, args.cell))


def _draw_gpus_by_strategy(args):
    from vramplan.cli.fit import specs_from_args
    from vramplan.cli.parallel_flags import host_ram_from_args
    from vramplan.plots import gpus_by_strategy, gpus_by_strategy_figure
    from vramplan.specs.parallel import ParallelConfig

    from vramplan.cli.parallel_flags import split_gpu_count
    from vramplan.errors import InputError

    count, name = split_gpu_count(args.gpu)
    if count is not None:
        raise InputError("--gpu", f"{args.gpu}: the columns are the GPU counts (--counts); give --gpu {name}")
    model, gpu, run = specs_from_args(args)
    host_ram, _source = host_ram_from_args(args, ParallelConfig(gpus=2))  # any multi-GPU layout: the same default
    grid = gpus_by_strategy(model, gpu, run, gpu_counts=positive_ints(args.counts, "--counts"),
                            gpus_per_node=args.gpus_per_node, host_ram_bytes=host_ram)
    return gpus_by_strategy_figure(grid)


def _draw_max_seq(args):
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.plots import max_seq_curves, max_seq_figure
    from vramplan.resolve import resolve_model

    run = run_config_from_args(args)
    curves = max_seq_curves(resolve_model(args.model), _gpus(args.gpus, "--gpus"), run,
                            positive_ints(args.batches, "--batches"))
    return max_seq_figure(curves)


def _draw_seq_components(args):
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.errors import InputError
    from vramplan.gpus import get_gpu
    from vramplan.plots import seq_components, seq_components_figure
    from vramplan.plots.seq_components import seq_grid
    from vramplan.resolve import resolve_model

    if args.seq_min < 1 or args.seq_max <= args.seq_min:
        raise InputError("--seq-max", f"need 1 <= --seq-min < --seq-max (got {args.seq_min} and {args.seq_max})")
    if not 2 <= args.points <= 2000:
        raise InputError("--points", f"use 2 to 2000 points (got {args.points})")
    run = run_config_from_args(args)
    data = seq_components(resolve_model(args.model), get_gpu(args.gpu), run,
                          seq_grid(args.seq_min, args.seq_max, args.points))
    return seq_components_figure(data)


def _draw_validation(args):
    from vramplan.errors import InputError
    from vramplan.plots import load_validation_results, validation_figure
    from vramplan.plots.validation import DEFAULT_RESULTS

    if not 0 < args.band < 1:
        raise InputError("--band", f"use a fraction between 0 and 1, e.g. 0.1 for 10% (got {args.band})")
    return validation_figure(load_validation_results(args.results or [DEFAULT_RESULTS]), band=args.band)


def run(args) -> int:
    from vramplan.extras import require_extra
    from vramplan.plots.output import FIGURE_FORMATS, output_path, save_figure

    output_path(args.out, FIGURE_FORMATS)  # a bad --out fails before any work
    require_extra("plots", "plot")
    path = save_figure(args.draw(args), args.out)
    print(f"wrote {path}")
    return 0
