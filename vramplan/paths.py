"""Paths the user types, and files found inside a model folder, checked before they are opened."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from vramplan.errors import InputError
from vramplan.text import shown

MAX_NAME_CHARS = 255  # NAME_MAX on Linux and macOS: a longer component is ENAMETOOLONG


def user_path(text: str, field: str) -> Path:
    """`text` as a path, `~` expanded; an unknown `~user` or a component over 255 bytes is an InputError."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "Could not determine home directory" for ~nosuchuser
        raise InputError(field, f"cannot expand {shown(text.split('/')[0])}: no such user") from None
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_CHARS:
            raise InputError(field, f"a path component is {len(os.fsencode(part))} bytes; at most {MAX_NAME_CHARS} allowed")
    return path


def exists(path: Path) -> bool:
    """Path.exists() that answers False, not OSError, for names the OS cannot look up."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def regular_file_inside(path: Path, root: Path, field: str) -> Path:
    """`path` when it is a regular file whose real location is under `root` (links resolved).

    A FIFO or device would block or stream forever; a symlink out of the folder would read a
    file the user never named. The HF cache's own links (snapshots/<commit>/x -> ../../blobs/y)
    stay inside their `models--org--name` folder, which callers pass as `root`.
    """
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
        root_real = root.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InputError(field, f"cannot read {shown(path.name)}: missing, or a broken or looping link") from None
    if not stat.S_ISREG(mode):
        raise InputError(field, f"{shown(path.name)} is not a regular file (a FIFO, device or folder)")
    if not real.is_relative_to(root_real):
        raise InputError(field, f"{shown(path.name)} is a link to a file outside the model folder; copy the file in instead")
    return real


def model_root(folder: Path) -> Path:
    """The folder links may point into: the repo folder for an HF cache snapshot, else `folder`."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return folder
