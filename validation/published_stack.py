"""The software stack each published entry is planned with: its framework's recipe and its library versions.

One rule for versions: a version the source states is used as stated; a library the source's stack uses
but whose version it does not state takes the latest final release on PyPI on the source's date
(`versions_on`, from validation/published/stack/release_dates.toml, made by release_dates.py beside it).
A library the stack does not use (torchtune and LitGPT run their own model code, not transformers')
keeps the planner's current release: no version rule of that library applies to the run.
"""
from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from vramplan.errors import InputError
from vramplan.stack.profile import PACKAGES, parse_explicit
from vramplan.stack.recipes import RECIPES
from vramplan.stack.version import Version

RELEASE_DATES_FILE = Path(__file__).resolve().parent / "published" / "stack" / "release_dates.toml"
DATED_PACKAGES = ("transformers", "peft", "bitsandbytes", "torch", "trl")
NO_RECIPE = "none"
RECIPE_CHOICES = (*RECIPES, NO_RECIPE)


@lru_cache(maxsize=1)
def release_dates() -> dict[str, dict[str, str]]:
    """{package: {version: YYYY-MM-DD}} of the final releases in the committed data file."""
    data = tomllib.loads(RELEASE_DATES_FILE.read_text(encoding="utf-8"))
    return {package: dict(data[package]) for package in DATED_PACKAGES}


def release_on(package: str, date: str) -> str:
    """The highest final release of `package` uploaded on or before `date` (YYYY-MM-DD)."""
    out = [version for version, day in release_dates()[package].items() if day <= date]
    if not out:
        raise InputError("date", f"no {package} release on PyPI on or before {date}")
    return max(out, key=Version.parse)


def versions_on(date: str, packages=DATED_PACKAGES) -> str:
    """The --stack string of the releases current on `date`: "transformers=4.48.0,peft=0.14.0,..."."""
    return ",".join(f"{package}={release_on(package, date)}" for package in packages)


def check_versions(text: str, where: str) -> str:
    """`text` if it is pkg=ver pairs the --stack parser accepts ("" = none stated); InputError naming `where`."""
    if not text:
        return ""
    try:
        parse_explicit(text)
    except InputError as exc:
        raise InputError(where, exc.message) from None
    return text


def check_uses(uses, where: str) -> tuple[str, ...]:
    if not isinstance(uses, list) or not all(isinstance(name, str) and name in PACKAGES for name in uses):
        raise InputError(where, f"a list of the packages the stack runs, each one of {', '.join(PACKAGES)}")
    return tuple(uses)


def planner_stack(date: str, stated: str, uses: tuple[str, ...]) -> str:
    """The --stack string for an entry: stated versions as stated, the rest of `uses` as on `date`."""
    given = {name: version.strip() for name, _, version in
             (part.partition("=") for part in stated.split(",") if part.strip())}
    dated = [name for name in DATED_PACKAGES if name in uses and name not in given]
    pairs = [f"{name}={given[name]}" for name in given] + ([versions_on(date, dated)] if dated else [])
    return ",".join(pairs) or "current"
