"""Finding validation results CSVs: shared by the harness's report and the validation plot."""
from __future__ import annotations

from pathlib import Path

from vramplan.errors import InputError


def csv_files(paths, field: str = "paths") -> list[Path]:
    """The CSV files under `paths` (files or folders), sorted; none at all is an InputError."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(field, f"no such file or folder: {path} (give the results CSV files or their folder)")
    if not files:
        where = ", ".join(str(p) for p in paths)
        raise InputError(field, f"no validation CSV files in {where} (run `vramplan validate` on a GPU machine first)")
    return files
