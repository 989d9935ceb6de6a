"""Strict readers for the fields of an untrusted JSON object (a config.json).

JSON has one number type and Python's `bool(...)`/`int(...)` accept anything, so a config with
`"attention_bias": "false"` or `"num_hidden_layers": 32.7` would be read as something it does not
say. These readers take a field only in its own JSON type: a bool is `true`/`false`, a count is
an integer (an integral float such as `4096.0` is the same number; a bool is not a count), and
`null` means the field is absent. Anything else is an InputError naming the field and the
allowed values; the value is shown short and on one line, whatever it is.
"""
from __future__ import annotations

import math
from typing import Any

from vramplan.errors import InputError

_ABSENT = object()


def shown(value: Any) -> str:
    """`value` for an error message: short, one line, never the whole of a huge or nested value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def read_count(cfg: dict, key: str, where: str, low: int, high: int, default: Any = None) -> Any:
    """cfg[key] as an int in [low, high]; `default` when it is absent or null."""
    value = cfg.get(key, _ABSENT)
    if value is _ABSENT or value is None:
        return default
    number = value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise InputError(f"{where}{key}", f"must be an integer from {low} to {high} (got {shown(value)})")
    return number


def read_bool(cfg: dict, key: str, where: str, default: Any = None) -> Any:
    """cfg[key] as a JSON bool; `default` when it is absent or null."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"{where}{key}", f"must be true or false (got {shown(value)})")
    return value


def read_number(cfg: dict, key: str, where: str) -> float | None:
    """cfg[key] as a finite JSON number (not a bool); None when it is absent or null."""
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}{key}", f"must be a finite number or null (got {shown(value)})")
    return float(value)


def read_name(cfg: dict, key: str, where: str, default: str = "") -> str:
    """cfg[key] as a short printable string (a model_type, a quant method); `default` when absent."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 100 or not value.isprintable():
        raise InputError(f"{where}{key}", f"must be a printable string of at most 100 characters "
                                          f"(got {shown(value)})")
    return value


def read_strings(cfg: dict, key: str, where: str) -> list[str] | None:
    """cfg[key] as a list of strings (layer_types); None when it is absent or null."""
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{where}{key}", f"must be a list of strings (got {shown(value)})")
    return value
