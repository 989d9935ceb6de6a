"""`vramplan tui` (alias `explore`): the what-if explorer, started from any `fit` flags."""
from __future__ import annotations

import argparse

from vramplan.extras import require_extra

HELP = "interactive what-if explorer: turn any knob, watch the verdict move"
EPILOG = """examples:
  vramplan tui
  vramplan explore --model llama-3.1-8b --gpu 24GiB --seq 2048 --batch 4
  vramplan tui --model 13b --gpu t4 --screenshot docs/tui.svg   (headless: save an SVG and exit)
keys: F1 help, F2 copy the `vramplan fit` line, F3 transformers/peft snippet, Ctrl+S save SVG+JSON, Ctrl+Q quit
needs the tui extra: pip install 'vramplan[tui]'"""


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give COLUMNSxROWS like 120x40 (got {text!r})") from None
    if width < 40 or height < 12:
        raise argparse.ArgumentTypeError(f"at least 40x12 (got {text!r})")
    return width, height


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_model_gpu_arguments
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("tui", aliases=["explore"], help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    parser.add_argument("--screenshot", metavar="PATH",
                        help="do not open the app: draw it headless, save an SVG screenshot to PATH and exit")
    parser.add_argument("--size", type=_size, default=(120, 40), metavar="COLSxROWS",
                        help="terminal size for --screenshot (default: 120x40)")
    add_run_arguments(parser)


def run(args) -> int:
    from vramplan.cli.run_flags import run_config_from_args

    run_config = run_config_from_args(args)
    require_extra("tui", "tui")
    from vramplan.tui.app import ExplorerApp, headless_screenshot

    app = ExplorerApp(args.model, args.gpu, run_config)  # bad --model/--gpu: InputError before drawing
    if args.screenshot:
        import asyncio

        print(asyncio.run(headless_screenshot(app, args.screenshot, args.size)))
        return 0
    app.run()
    return 0
