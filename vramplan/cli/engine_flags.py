"""Every serving engine's flags on another command's parser (`compare --engine`), as `vramplan serve`
defines them: one vocabulary. A flag the command already has (--format, --seq, --batch,
--max-new-tokens, --kv-cache-dtype, -b) keeps the command's definition and is read for the engine
under the engine's name; the engine then checks the value as `serve` does.
"""
from __future__ import annotations

import argparse


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    from vramplan.cli.serve import ENGINES, add_host_ram_argument, engine_module

    parser.add_argument("--engine", "-e", choices=tuple(ENGINES), default=None,
                        help="plan serving in this engine with its own flags (those of `vramplan serve`) "
                             "instead of a training/inference run")
    add_host_ram_argument(parser)
    sources: dict[str, dict[str, tuple[str, str]]] = {}  # engine -> engine dest -> (dest on parser, flag)
    for engine in ENGINES:
        scratch = argparse.ArgumentParser(add_help=False)
        engine_module(engine).add_arguments(scratch)
        sources[engine] = {}
        for scratch_group in scratch._action_groups:
            if not scratch_group._group_actions:
                continue
            group = parser.add_argument_group(f"{scratch_group.title} (compare --engine {engine})")
            for action in scratch_group._group_actions:
                taken = parser._option_string_actions.get(action.option_strings[0])
                free = [flag for flag in action.option_strings if flag not in parser._option_string_actions]
                if free:  # e.g. llama.cpp's `-b, --batch-size` comes as --batch-size (-b is --micro-batch-size)
                    action.option_strings = free
                    group._add_action(action)
                    sources[engine][action.dest] = (action.dest, _long(action))
                else:  # already on the parser (the same flag name): read the parser's value
                    sources[engine][action.dest] = (taken.dest, action.option_strings[0])
    parser.set_defaults(engine_flag_sources=sources, engine_parser_defaults={
        action.dest: (action.default, _long(action)) for action in parser._actions if action.option_strings})


def _long(action) -> str:
    return next((flag for flag in action.option_strings if flag.startswith("--")), action.option_strings[0])


# Flags of the command itself that keep their meaning with --engine.
COMMON = {"gpus", "models", "model", "gpu", "json", "csv", "engine", "host_ram", "weight_format", "help"}


def engine_namespace(args: argparse.Namespace) -> argparse.Namespace | None:
    """The namespace `engine_module(args.engine).plan_from_args` reads, from the command's parsed `args`;
    None without --engine. A flag of another engine, or of the training run, is an InputError naming it;
    so is an engine's own flag without --engine."""
    from vramplan.cli.serve import host_ram_bytes
    from vramplan.errors import InputError

    sources = args.engine_flag_sources
    added = {dest: engine for engine, flags in sources.items() for name, (dest, _) in flags.items() if name == dest}
    mine = {dest for dest, _ in sources[args.engine].values()} if args.engine else set()
    for dest, (default, flag) in args.engine_parser_defaults.items():
        if dest in COMMON and dest != "host_ram" or dest in mine or getattr(args, dest, None) == default:
            continue
        if dest == "host_ram" and args.engine is not None:
            continue  # host_ram_bytes says which engines take it
        owner = "llama.cpp" if dest == "host_ram" else added.get(dest)
        if args.engine is None:
            if owner is not None:
                raise InputError(flag, f"belongs to --engine {owner}: add --engine {owner}")
            continue
        if owner is not None:
            raise InputError(flag, f"belongs to --engine {owner}, not {args.engine}")
        raise InputError(flag, f"is a training-run flag; with --engine {args.engine} compare takes the flags of "
                               f"`vramplan serve --engine {args.engine}`")
    if args.engine is None:
        return None
    values = {dest: getattr(args, source) for dest, (source, _) in sources[args.engine].items()}
    values["format"] = args.weight_format
    values["engine"] = args.engine
    values["host_ram_bytes"] = host_ram_bytes(argparse.Namespace(engine=args.engine, host_ram=args.host_ram))
    return argparse.Namespace(**values)
