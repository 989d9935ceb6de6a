"""The software stack a plan assumes: which versions of the libraries that decide memory.

Three forms of `--stack` (RunConfig.stack):
- "auto" (the default): the versions installed here, read from package metadata
  (`importlib.metadata.version`; nothing is imported), each missing package taking the current
  release. The environment variable VRAMPLAN_STACK, when set, replaces what "auto" reads (the test
  suite pins it to "current" so that no result depends on what a machine has installed).
- "current": the current releases, `CURRENT_RELEASES` - what the memory model was checked against.
- explicit versions: "transformers=4.44,bitsandbytes=0.43.1"; unnamed packages take the current release.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from vramplan.errors import InputError
from vramplan.stack.version import Version

# The releases the memory model and its trace simulator were checked against (DESIGN.md, NOTES.md).
CURRENT_RELEASES = {"transformers": "5.24", "peft": "0.21", "bitsandbytes": "0.50", "torch": "2.13"}
# Recorded when installed or given; no rule is keyed on them (their recipes set the knobs instead).
OPTIONAL_PACKAGES = ("trl", "unsloth")
PACKAGES = (*CURRENT_RELEASES, *OPTIONAL_PACKAGES)
STACK_ENV = "VRAMPLAN_STACK"
FIELD = "--stack"


@dataclass(frozen=True)
class Stack:
    """Versions by package (each of CURRENT_RELEASES, plus OPTIONAL_PACKAGES present) and their source."""

    versions: tuple[tuple[str, Version], ...]
    source: str  # "auto: installed", "current releases", "explicit", "VRAMPLAN_STACK=..."

    def __getitem__(self, package: str) -> Version:
        return dict(self.versions)[package]

    def with_source(self, source: str) -> "Stack":
        return Stack(self.versions, source)

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, **{name: str(version) for name, version in self.versions}}


def _with_current(given: dict[str, Version], source: str) -> Stack:
    versions = [(name, given.get(name, Version.parse(release))) for name, release in CURRENT_RELEASES.items()]
    versions += [(name, given[name]) for name in OPTIONAL_PACKAGES if name in given]
    return Stack(tuple(versions), source)


def parse_explicit(text: str) -> dict[str, Version]:
    """{package: Version} from "transformers=4.44,bitsandbytes=0.43.1"; InputError naming --stack otherwise."""
    allowed = f"allowed packages: {', '.join(PACKAGES)}; or 'auto' or 'current'"
    given: dict[str, Version] = {}
    for part in text.split(","):
        name, sep, version = (piece.strip() for piece in part.partition("="))
        if not sep or not name or not version:
            raise InputError(FIELD, f"give package=version pairs separated by commas, like "
                                    f"transformers=4.46,bitsandbytes=0.43.1 (got {part.strip()!r}); {allowed}")
        if name not in PACKAGES:
            raise InputError(FIELD, f"unknown package {name!r}; {allowed}")
        if name in given:
            raise InputError(FIELD, f"{name} given twice")
        try:
            given[name] = Version.parse(version)
        except ValueError as exc:
            raise InputError(FIELD, f"{name}: {exc}") from None
    return given


def check_stack_text(text: str) -> str:
    """`text` normalised (stripped, lower-case keywords) if it is a valid --stack; InputError otherwise."""
    cleaned = str(text).strip()
    if cleaned.lower() in ("auto", "current"):
        return cleaned.lower()
    parse_explicit(cleaned)
    return cleaned


def installed_versions() -> dict[str, Version]:
    """Installed versions of PACKAGES from their metadata (dist-info), without importing any of them."""
    import importlib.metadata as metadata

    found = {}
    for name in PACKAGES:
        try:
            found[name] = Version.parse(metadata.version(name))
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return found


@lru_cache(maxsize=32)
def _resolve(text: str, env_value: str | None) -> Stack:
    if text == "current":
        return _with_current({}, "current releases")
    if text != "auto":
        return _with_current(parse_explicit(text), "explicit")
    if env_value:
        pinned = check_stack_text(env_value)
        if pinned != "auto":
            return _resolve(pinned, None).with_source(f"{STACK_ENV}={pinned}")
    found = installed_versions()
    if not found:
        return _with_current({}, "auto: nothing installed, current releases")
    return _with_current(found, "auto: installed")


def resolve_stack(text: str = "auto") -> Stack:
    """The Stack a --stack value stands for (see the module docstring)."""
    return _resolve(check_stack_text(text), os.environ.get(STACK_ENV))

