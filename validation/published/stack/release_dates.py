"""Write validation/published/stack/release_dates.toml: the upload date of every final release (X.Y or X.Y.Z,
no rc/dev/post) of the libraries a --stack names, read from PyPI's JSON API.

    python validation/published/stack/release_dates.py > validation/published/stack/release_dates.toml

The date of a release is the earliest `upload_time` among its files (`releases[v][i]['upload_time']`
of https://pypi.org/pypi/<package>/json). Only the standard library is used; the output is data that
`validation.published_stack.versions_on` reads (no network at planning time).
"""
from __future__ import annotations

import datetime
import json
import re
import sys
import urllib.request

PACKAGES = ("transformers", "peft", "bitsandbytes", "torch", "trl")
FINAL = re.compile(r"\d+\.\d+(\.\d+)?")
URL = "https://pypi.org/pypi/{}/json"


def release_dates(package: str) -> dict[str, str]:
    """{version: YYYY-MM-DD} of the final releases of `package` that have at least one file."""
    with urllib.request.urlopen(URL.format(package), timeout=60) as response:
        releases = json.load(response)["releases"]
    dates = {}
    for version, files in releases.items():
        if FINAL.fullmatch(version) and files:
            dates[version] = min(item["upload_time"] for item in files)[:10]
    return dates


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def main() -> None:
    today = datetime.date.today().isoformat()
    print("# Final releases (X.Y[.Z]) and the day their first file reached PyPI.")
    print(f"# Fetched {today} by: python validation/published/stack/release_dates.py > validation/published/stack/release_dates.toml")
    print("# (PyPI JSON API: releases[version][i]['upload_time'], earliest file.)")
    print(f'fetched = "{today}"')
    for package in PACKAGES:
        dates = release_dates(package)
        print(f"\n[{package}]")
        for version in sorted(dates, key=_key):
            print(f'"{version}" = "{dates[version]}"')


if __name__ == "__main__":
    sys.exit(main())
