"""Reading an untrusted JSON file: size-bounded, parsed (never executed), one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

from vramplan.errors import InputError


def read_json_object(path: Path, max_bytes: int, what: str):
    """The JSON object in `path`; too large, unreadable, invalid or not an object is an InputError."""
    origin = str(path)
    try:
        if path.stat().st_size > max_bytes:
            raise InputError(origin, f"larger than {max_bytes} bytes; not a {what}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(origin, f"cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(origin, f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise InputError(origin, f"a {what} must be a JSON object")
    return data
