"""`vramplan` entry point: argparse, one module per command, heavy imports inside commands."""
from __future__ import annotations

import argparse
import importlib
import sys

# Command -> the module that defines it, in the order `--help` lists them. Each module has
# add_parser(subparsers) and either run(args) or sets `handler` defaults on its parsers.
COMMANDS = {
    "fit": "vramplan.cli.fit",
    "max": "vramplan.cli.maxcmd",
    "serve": "vramplan.cli.serve",
    "compare": "vramplan.cli.compare",
    "sweep": "vramplan.cli.sweep",
    "explain": "vramplan.cli.explain",
    "models": "vramplan.cli.listing",
    "gpus": "vramplan.cli.listing",
    "plot": "vramplan.cli.plot",
    "report": "vramplan.cli.report",
    "tui": "vramplan.cli.tui",
    "explore": "vramplan.cli.tui",
    "validate": "vramplan.cli.validate",
    "completion": "vramplan.cli.completion",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str):
        from vramplan.text import shown

        self.exit(2, f"error: {shown(message, max_chars=400)} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with `command` only that command's parser (what a run of it needs: the
    engines' flags of `serve` and `compare` are not built for `fit`, which keeps its start-up short)."""
    parser = OneLineErrorParser(
        prog="vramplan",
        description="Will this fine-tuning or inference run fit on this GPU? How much room is left, "
                    "what is the most that fits, and what is the cheapest change when it does not.",
        epilog="start with: vramplan fit --model 13b --gpu t4",
    )
    from vramplan import __version__

    parser.add_argument("--version", action="version", version=f"vramplan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for module_name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        module = importlib.import_module(module_name)
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        if hasattr(module, "run"):
            for name in set(subparsers.choices) - before:
                subparsers.choices[name].set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vramplan.errors import InputError
    from vramplan.text import shown

    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(words)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except InputError as exc:
        # File and tensor names inside the message are untrusted: escaped, so a name holding
        # "\nFITS" or an ANSI sequence cannot forge a line or recolour the terminal.
        print(f"error: {shown(exc, max_chars=600)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
