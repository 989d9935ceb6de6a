"""Optional extras: import what a command needs, or say which extra to install.

The extras and their packages are the ones pyproject.toml's `[project.optional-dependencies]`
declares; a shell calls `require_extra` before its first heavy import, so a plain
`pip install .` gets a one-line InputError (exit 2) instead of a ModuleNotFoundError traceback.
"""
from __future__ import annotations

import importlib

from vramplan.errors import InputError

# extra name -> top-level modules it provides (pyproject.toml, project.optional-dependencies)
EXTRA_MODULES = {
    "plots": ("matplotlib",),
    "tui": ("textual",),
    "torch": ("torch",),
    "validate": ("torch", "transformers", "peft"),
}


def require_extra(extra: str, command: str) -> None:
    """Import every module of `extra`, or raise InputError naming `command` and the pip line."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise InputError(command, f"needs {module}, from the {extra} extra: "
                                      f"pip install 'vramplan[{extra}]'") from None


__all__ = ["EXTRA_MODULES", "require_extra"]
