"""Reading an untrusted JSON file: size-bounded, parsed (never executed), one-line errors."""
from __future__ import annotations

import json
import stat
from pathlib import Path

from vramplan.errors import InputError


def parse_json(raw: bytes | str, origin: str, what: str):
    """The JSON value in `raw`; anything json.loads refuses is an InputError, never a traceback.

    Beyond JSONDecodeError, json.loads raises RecursionError on deep nesting ('[' * 10000) and
    ValueError on integers over 4,300 digits (CPython's int/str limit).
    """
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InputError(origin, f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(origin, f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InputError(origin, f"{what} is nested too deeply to be a real one") from None
    except ValueError:
        raise InputError(origin, f"{what} holds a number too long to be a real one (over 4,300 digits)") from None


def read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file `path`, at most `max_bytes`; a FIFO or device is refused before it is opened."""
    origin = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(origin, f"not a regular file; a {what} is a file")
        if info.st_size > max_bytes:
            raise InputError(origin, f"larger than {max_bytes} bytes; not a {what}")
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(origin, f"cannot read: {exc.strerror or exc.__class__.__name__}") from None
    if len(raw) > max_bytes:  # grew after stat
        raise InputError(origin, f"larger than {max_bytes} bytes; not a {what}")
    return raw


def read_json_object(path: Path, max_bytes: int, what: str):
    """The JSON object in `path`; too large, unreadable, invalid or not an object is an InputError."""
    data = parse_json(read_bounded(path, max_bytes, what), str(path), what)
    if not isinstance(data, dict):
        raise InputError(str(path), f"a {what} must be a JSON object")
    return data
