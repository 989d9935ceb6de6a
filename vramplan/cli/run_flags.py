"""Command-line flags for every RunConfig field, generated from the model so none is missed."""
from __future__ import annotations

import argparse
import types
import typing

from vramplan.errors import InputError
from vramplan.present import SHORT_FLAGS, flag_name
from vramplan.specs.run import RunConfig, field_choices, field_words
from vramplan.text import parse_float, parse_int


def _typed(parse, flag: str):
    """An argparse `type=` that reads with vramplan.text's rule (ASCII digits, finite floats)."""
    def convert(text: str):
        try:
            return parse(text, flag)
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
    convert.__name__ = parse.__name__
    return convert


def bounded_int(flag: str, smallest: int, largest: int):
    """An argparse `type=` for an integer flag in [smallest, largest] (parse_int's rule, then the bound)."""
    def parse(text: str, field: str) -> int:
        value = parse_int(text, field)
        if not smallest <= value <= largest:
            raise InputError(field, f"{value} is out of range; allowed {smallest:,} to {largest:,}")
        return value
    parse.__name__ = "integer"
    return _typed(parse, flag)


def _non_none(annotation):
    """`int` for `int | None` and `Optional[int]`; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def add_run_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per RunConfig field (default None: the RunConfig default applies)."""
    group = parser.add_argument_group("run configuration (defaults follow the QLoRA recipe)")
    for name, field in RunConfig.model_fields.items():
        if name in skip:
            continue
        default = field.default
        help_text = (field.description or "").replace("%", "%%")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        flags = (flag_name(name), *SHORT_FLAGS.get(name, ()))
        if field.annotation is bool:
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        choices = list(field_choices(name) or ())
        base = _non_none(field.annotation)
        if words := field_words(name):  # kbit_prep: True | "norms" | False
            words = list(words)
            group.add_argument(*flags, dest=name, choices=words, default=None, metavar="{" + ",".join(words) + "}",
                               help=help_text)
            group.add_argument("--no-" + flags[0][2:], dest=name, action="store_const", const="none",
                               help=f"same as {flags[0]} none")
            continue
        if choices:
            group.add_argument(*flags, dest=name, choices=choices, default=None, help=help_text, metavar="{" + ",".join(choices) + "}")
        elif base is int:
            group.add_argument(*flags, dest=name, type=_typed(parse_int, flags[0]), default=None, help=help_text, metavar="N")
        elif base is float:
            group.add_argument(*flags, dest=name, type=_typed(parse_float, flags[0]), default=None, help=help_text, metavar="X")
        else:  # lora_targets: comma-separated
            group.add_argument(*flags, dest=name, default=None, help=help_text + "; comma-separated", metavar="NAMES")


def run_fields_from_args(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in RunConfig.model_fields
            if getattr(args, name, None) is not None}


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """RunConfig from parsed flags; errors name the flag the user typed."""
    from vramplan.estimate import make_run

    try:
        return make_run(**run_fields_from_args(args))
    except InputError as exc:
        field = exc.field.split(".")[0]
        if field in RunConfig.model_fields:
            raise InputError(flag_name(field), exc.message) from None
        raise
