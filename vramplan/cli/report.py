"""`vramplan report --out FILE`: the plan, its breakdown, advice and figures in one file."""
from __future__ import annotations

import argparse

HELP = "write a shareable report (Markdown or HTML): verdict, breakdown, advice and figures"
EPILOG = """examples:
  vramplan report --model 13b --gpu t4 --seq 2048 --out plan.html
  vramplan report --model llama-3.1-8b --gpu 4090 --out plan.md
.html is one self-contained file (figures embedded); .md writes its PNGs next to it.
takes the same flags as `vramplan fit`; exit code 2 on bad input"""


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_model_gpu_arguments
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("report", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", "-o", required=True, metavar="FILE",
                        help="report file: .html (self-contained) or .md (PNGs written beside it)")
    add_model_gpu_arguments(parser)
    add_run_arguments(parser)


def run(args) -> int:
    from vramplan.cli.run_flags import run_config_from_args
    from vramplan.extras import require_extra
    from vramplan.gpus import get_gpu
    from vramplan.plots.output import output_path
    from vramplan.present import command_line
    from vramplan.report import REPORT_FORMATS, write_report
    from vramplan.resolve import resolve_model

    output_path(args.out, REPORT_FORMATS)  # a bad --out fails before any work
    require_extra("plots", "report")
    run_config = run_config_from_args(args)
    written = write_report(args.out, resolve_model(args.model), get_gpu(args.gpu), run_config,
                           command=command_line(args.model, args.gpu, run_config))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
