"""GPU profiles (`gpu_profiles/*.toml`) and the `--gpu` argument.

`get_gpu` takes a profile key or alias (`a100`, `3090`), a path to a user's TOML file with
GPUSpec fields, or a size (`24GiB`, `24GB`, `80G`, `16384MiB`) for a custom GPU.
Profiles ship inside the wheel as `vramplan/gpu_profiles/` (hatch force-include); in an
editable install they are read from the source tree's top-level `gpu_profiles/`.
"""
from __future__ import annotations

import functools
import re
import tomllib
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from vramplan.catalog import lookup, normalize_name
from vramplan.errors import InputError, from_validation_error
from vramplan.paths import exists, user_path
from vramplan.sources.json_file import read_bounded
from vramplan.specs.bounds import GPU_BOUNDS, bound_message
from vramplan.specs.gpu import GPUSpec
from vramplan.text import shown

# Binary units for G/M/T without "B", as in `ls -h` and PyTorch's allocator messages.
_UNIT_BYTES = {
    "tib": 2**40, "t": 2**40, "tb": 10**12,
    "gib": 2**30, "g": 2**30, "gb": 10**9,
    "mib": 2**20, "m": 2**20, "mb": 10**6,
}
# ASCII digits only (`\d` also matches '٣'), at most 12 before the point: 10^12 TiB is past every bound.
_SIZE = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,12})?)\s*([a-z]+)\s*$", re.ASCII)
_LONG_SIZE = re.compile(r"^\s*[0-9.]{13,}\s*[a-z]+\s*$", re.ASCII)
MAX_PROFILE_BYTES = 65_536  # a profile is ~20 short lines; bundled ones are under 2 KB
_LIST_HINT = "vramplan gpus lists all; or give a size like 24GiB or a .toml file"


def _profile_dir() -> Traversable:
    """Where the bundled profiles are: package data first, then the source tree."""
    try:
        packaged = resources.files("vramplan") / "gpu_profiles"
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError, FileNotFoundError):
        pass
    return Path(__file__).resolve().parent.parent / "gpu_profiles"


def gpu_from_toml(text: str, origin: str, default_key: str) -> GPUSpec:
    """A GPUSpec from TOML text; errors name `origin` (the file) and the field."""
    if len(text) > MAX_PROFILE_BYTES:
        raise InputError(origin, f"larger than {MAX_PROFILE_BYTES} characters; not a GPU profile")
    try:
        fields = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(origin, f"not valid TOML: {shown(exc)}") from None
    except RecursionError:  # tomllib recurses on nested arrays and inline tables
        raise InputError(origin, "not a GPU profile: nested too deeply") from None
    except ValueError:  # an integer over 4,300 digits
        raise InputError(origin, "not a GPU profile: holds a number too long to be a real one") from None
    fields.setdefault("key", default_key)
    fields.setdefault("name", fields["key"])
    try:
        return GPUSpec(**fields)
    except Exception as exc:  # pydantic.ValidationError
        raise from_validation_error(exc, prefix=f"{origin}: ") from None


@functools.cache
def _profiles() -> tuple[dict[str, GPUSpec], dict[str, str]]:
    """Bundled profiles by key, and the normalized-name index. Loaded once."""
    gpus: dict[str, GPUSpec] = {}
    index: dict[str, str] = {}
    for entry in sorted(_profile_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        stem = entry.name[: -len(".toml")]
        spec = gpu_from_toml(entry.read_text(encoding="utf-8"), f"gpu_profiles/{entry.name}", stem)
        if spec.key != stem:
            raise InputError(f"gpu_profiles/{entry.name}", f"key '{spec.key}' must match the file name '{stem}'")
        for alias in (spec.key, *spec.aliases):
            owner = index.setdefault(normalize_name(alias), spec.key)
            if owner != spec.key:
                raise InputError("gpu_profiles", f"name '{alias}' is used by both {owner} and {spec.key}")
        gpus[spec.key] = spec
    return gpus, index


def parse_size(text: str) -> int | None:
    """Bytes in a size like `24GiB`, `24GB`, `80G`, `16384MiB`; None when it is not one."""
    match = _SIZE.match(text.lower())
    if not match and _LONG_SIZE.match(text.lower()):
        raise InputError("gpu", f"size {shown(text.strip()[:40])}...: at most 12 digits before and after the point")
    if not match or match.group(2) not in _UNIT_BYTES:
        return None
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])


def size_reading(text: str) -> str:
    """How `parse_size` read `text`, e.g. "24GB read as 24 x 10^9 bytes = 22.35 GiB": 24GB
    and 24G differ by 1.65 GiB, so a plan says which one it used."""
    match = _SIZE.match(text.lower())
    number, unit = match.group(1), _UNIT_BYTES[match.group(2)]
    power = f"10^{len(str(unit)) - 1}" if unit % 10 == 0 else f"2^{unit.bit_length() - 1}"
    return (f"GPU size {text.strip()} read as {number} x {power} bytes = {parse_size(text) / 2**30:.2f} GiB "
            "(GB, MB, TB are decimal; G, GiB, M, MiB, T, TiB binary)")


def custom_gpu(total_memory_bytes: int, label: str) -> GPUSpec:
    """A GPU known only by its memory size: bf16 assumed, default context and workspace."""
    if total_memory_bytes <= 0:
        raise InputError("gpu", f"size must be positive (got {shown(label)!r})")
    if total_memory_bytes > GPU_BOUNDS["total_memory_bytes"]:
        raise InputError("gpu", f"size {shown(label)}: {bound_message(GPU_BOUNDS['total_memory_bytes'], ' bytes')}")
    return GPUSpec(
        key=f"custom-{normalize_name(label)}",
        name=f"custom {label.strip()}",
        vendor="custom",
        total_memory_bytes=total_memory_bytes,
        bf16=True,
        source=f"size given on the command line: {label.strip()}",
        notes="Custom GPU: only the memory size is known; bf16 assumed, default CUDA context estimate.",
        size_reading=size_reading(label) if parse_size(label) is not None else "",
    )


def get_gpu(name: str) -> GPUSpec:
    """The GPU `name` means: a profile key or alias, a path to a TOML file, or a size."""
    text = name.strip()
    if text.lower().endswith(".toml") or "/" in text or "\\" in text:
        path = user_path(text, "gpu")
        if not exists(path):
            raise InputError("gpu", f"no such GPU profile file: {shown(text)}")
        try:
            content = read_bounded(path, MAX_PROFILE_BYTES, "GPU profile").decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(str(path), "cannot read GPU profile: not UTF-8 text") from None
        return gpu_from_toml(content, str(path), path.stem)
    gpus, index = _profiles()
    if normalize_name(text) in index:
        return gpus[index[normalize_name(text)]]
    size = parse_size(text)
    if size is not None:
        return custom_gpu(size, text)
    return gpus[lookup(text, index, "gpu", "GPU", _LIST_HINT)]


def list_gpus() -> list[GPUSpec]:
    """Every bundled profile, smallest memory first."""
    return sorted(_profiles()[0].values(), key=lambda g: (g.total_memory_bytes, g.key))


__all__ = ["get_gpu", "list_gpus", "parse_size", "size_reading", "custom_gpu", "gpu_from_toml"]
