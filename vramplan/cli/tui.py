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


MAX_SIZE = (1000, 1000)  # columns, rows: far past any real terminal; a headless draw grows with their product


def _size(text: str) -> tuple[int, int]:
    from vramplan.errors import InputError
    from vramplan.text import parse_int, shown

    try:
        width, height = (parse_int(part, "--size") for part in text.lower().split("x"))
    except (ValueError, InputError):  # InputError is a ValueError; wrong part count is a ValueError too
        raise argparse.ArgumentTypeError(f"give COLUMNSxROWS like 120x40 (got '{shown(text, 40)}')") from None
    if not (40 <= width <= MAX_SIZE[0] and 12 <= height <= MAX_SIZE[1]):
        raise argparse.ArgumentTypeError(f"from 40x12 to {MAX_SIZE[0]}x{MAX_SIZE[1]} (got '{shown(text, 40)}')")
    return width, height


def _screenshot_path(text: str):
    """The --screenshot path, refused in one line unless its folder exists and is writable."""
    import os

    from vramplan.errors import InputError
    from vramplan.paths import user_path
    from vramplan.text import shown

    path = user_path(text, "--screenshot")
    folder = path.parent if str(path.parent) else path.cwd()
    if path.is_dir():
        raise InputError("--screenshot", f"{shown(text)} is a folder; give a file name like tui.svg")
    if not folder.is_dir():
        raise InputError("--screenshot", f"folder {shown(folder)} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError("--screenshot", f"cannot write {shown(text)}: permission denied")
    return path


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
    screenshot = _screenshot_path(args.screenshot) if args.screenshot else None
    require_extra("tui", "tui")
    from vramplan.tui.app import ExplorerApp, headless_screenshot

    app = ExplorerApp(args.model, args.gpu, run_config)  # bad --model/--gpu: InputError before drawing
    if screenshot:
        import asyncio

        from vramplan.errors import InputError
        from vramplan.text import shown

        try:
            print(asyncio.run(headless_screenshot(app, str(screenshot), args.size)))
        except OSError as exc:  # e.g. disk full, or the folder changed since the check
            raise InputError("--screenshot", f"cannot write {shown(args.screenshot)}: {exc.strerror}") from None
        return 0
    app.run()
    return 0
