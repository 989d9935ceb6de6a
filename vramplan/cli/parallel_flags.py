"""Command-line flags for every ParallelConfig field, the `--gpu 4xa100-40g` count prefix and `--host-ram`."""
from __future__ import annotations

import argparse
import re
import typing

from vramplan.errors import InputError
from vramplan.specs.parallel import ParallelConfig

_COUNT_PREFIX = re.compile(r"^\s*([0-9]{1,4})\s*[xX]\s*(\S.*)$")
_INT_FIELDS = ("gpus", "nodes", "tensor_parallel", "allgather_bucket_size", "stage3_max_live_parameters",
               "ddp_bucket_cap_mb")
_BUCKET_FIELDS = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")
_BOOL_FIELDS = ("limit_all_gathers", "forward_prefetch", "backward_prefetch", "cpu_ram_efficient_loading",
                "overlap_comm")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ParallelConfig field (default None: the ParallelConfig default applies), and --host-ram."""
    from vramplan.cli.run_flags import bounded_int

    group = parser.add_argument_group("more than one GPU (per-rank plan; default: one GPU)")
    for name, field in ParallelConfig.model_fields.items():
        help_text = (field.description or "").replace("%", "%%") + f" (default: {field.default})"
        if name in _BOOL_FIELDS:
            group.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif name in _INT_FIELDS:
            bound = next(m.le for m in field.metadata if hasattr(m, "le"))
            group.add_argument(flag(name), dest=name, type=bounded_int(flag(name), 0 if name.startswith("stage3") else 1,
                                                                       bound), default=None, metavar="N", help=help_text)
        elif name in _BUCKET_FIELDS:
            group.add_argument(flag(name), dest=name, type=_bucket(flag(name)), default=None, metavar="N|auto",
                               help=help_text)
        else:
            choices = [str(choice) for choice in _literal_choices(field.annotation)]
            group.add_argument(flag(name), dest=name, choices=choices, default=None,
                               metavar="{" + ",".join(choices) + "}", help=help_text)
    group.add_argument("--host-ram", default=None, metavar="SIZE",
                       help="host RAM of one node (sizes as --gpu: 512GiB); default on more than one GPU: this "
                            "machine's RAM; 'unknown' skips the host verdict")


def _literal_choices(annotation) -> tuple:
    args = typing.get_args(annotation)
    literal = next((arg for arg in args if typing.get_origin(arg) is typing.Literal), annotation)
    return tuple(choice for choice in typing.get_args(literal) if choice is not None)


def _bucket(flag_text: str):
    from vramplan.cli.run_flags import bounded_int

    number = bounded_int(flag_text, 0, 1 << 40)

    def parse(text: str):
        return "auto" if text.strip().lower() == "auto" else number(text)
    parse.__name__ = "elements"
    return parse


def split_gpu_count(text: str) -> tuple[int | None, str]:
    """`4xa100-40g` -> (4, "a100-40g"); a name without a count prefix -> (None, name)."""
    match = _COUNT_PREFIX.match(text or "")
    if not match or "/" in text or "\\" in text:
        return None, text
    return int(match.group(1)), match.group(2).strip()


def parallel_from_args(args: argparse.Namespace) -> ParallelConfig:
    """ParallelConfig from the flags (and a count prefix on --gpu); errors name the flag."""
    count, _name = split_gpu_count(getattr(args, "gpu", "") or "")
    fields = {name: getattr(args, name) for name in ParallelConfig.model_fields if getattr(args, name, None) is not None}
    if count is not None:
        if count < 1:
            raise InputError("--gpu", f"the GPU count in {args.gpu!r} must be at least 1")
        if "gpus" in fields and fields["gpus"] != count:
            raise InputError("--gpus", f"{fields['gpus']} disagrees with --gpu {args.gpu} ({count} GPUs)")
        fields["gpus"] = count
    if "fsdp_version" in fields:
        fields["fsdp_version"] = int(fields["fsdp_version"])
    from pydantic import ValidationError

    try:
        return ParallelConfig(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = flag(str(error["loc"][0])) if error.get("loc") else "--strategy"
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        raise InputError(where, message) from None


def gpu_name_from_args(args: argparse.Namespace) -> str:
    """The --gpu value without its count prefix."""
    return split_gpu_count(args.gpu)[1]


def machine_ram_bytes() -> int | None:
    """This machine's physical RAM (os.sysconf), or None where it cannot be read."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def host_ram_from_args(args: argparse.Namespace, parallel: ParallelConfig) -> tuple[int | None, str]:
    """(bytes or None, where they came from): --host-ram, else this machine's RAM on more than one GPU."""
    from vramplan.gpus import parse_size

    text = getattr(args, "host_ram", None)
    if text is None:
        if parallel.is_single:
            return None, ""
        return machine_ram_bytes(), "this machine's RAM (--host-ram for the training node)"
    if text.strip().lower() == "unknown":
        return None, "not checked (--host-ram unknown)"
    try:
        value = parse_size(text.strip())
    except InputError as exc:
        raise InputError("--host-ram", exc.message) from None
    if value is None:
        raise InputError("--host-ram", f"give a size like 512GiB, 256GB or 'unknown' (got {text!r})")
    return value, "--host-ram"
