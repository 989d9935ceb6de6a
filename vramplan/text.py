"""Untrusted text in and out: strict number parsing, and names printed escaped.

One place for the rules, so every flag, size and file field reads numbers the same way and
no file name, tensor name or profile name can reach the terminal raw (a newline forging an
extra `error:` line, an ANSI escape recolouring it).
"""
from __future__ import annotations

import math
import re
import reprlib

from vramplan.errors import InputError

# ASCII only: `\d` and str.isdigit() also accept '²' and '٣', and int() takes '1_000' and ' 3 '.
_INT = re.compile(r"[+-]?[0-9]{1,19}", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,19}(?:\.[0-9]{0,19})?|\.[0-9]{1,19})(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)
# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi overrides.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def parse_int(text: str, field: str) -> int:
    """An integer written in ASCII digits (at most 19, so it fits int64); else an InputError."""
    value = str(text).strip()
    if not _INT.fullmatch(value):
        raise InputError(field, f"{shown(value)} is not an integer (ASCII digits, at most 19)")
    return int(value)


def parse_float(text: str, field: str) -> float:
    """A finite decimal number like 16, 0.05 or 1e-3; nan, inf and non-ASCII digits are refused."""
    value = str(text).strip()
    if not _FLOAT.fullmatch(value) or not math.isfinite(float(value)):
        raise InputError(field, f"{shown(value)} is not a finite decimal number")
    return float(value)


def shown(text: object, max_chars: int = 200) -> str:
    """`text` safe to print: control characters escaped as \\n, \\x1b, ...; long text cut."""
    text = str(text)
    if len(text) > max_chars:
        text = text[:max_chars] + f"... ({len(text)} characters)"
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shown_value(value: object) -> str:
    """repr() of a value from a file, bounded in depth and length (a 10,000-deep list prints as [[[...]]])."""
    try:
        return shown(_REPR.repr(value))
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"


def has_unsafe_characters(text: str) -> bool:
    return _UNSAFE.search(text) is not None
