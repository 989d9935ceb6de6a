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


MAX_CSV_BYTES = 16_000_000  # a results CSV is one row per run, ~300 bytes: 16 MB is 50,000 runs
MAX_FIELD_CHARS = 4096  # the longest real field is an error message, cut to a few hundred characters


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of one results CSV: bounded in size and field length, UTF-8 only.

    The csv module's own field limit is 128 KB and raises csv.Error; a non-UTF-8 file raises
    UnicodeDecodeError: both become one-line InputErrors naming the file and line.
    """
    import csv
    import io

    from vramplan.sources.json_file import read_bounded

    origin = str(path)
    try:
        text = read_bounded(path, MAX_CSV_BYTES, "results CSV").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(origin, f"not UTF-8 text (byte {exc.start}); results CSVs are UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error:
        raise InputError(f"{origin}:{reader.line_num}", "not a well-formed CSV line (a field over 128 KB?)") from None
    if not rows:
        return [], []
    header, records = rows[0], []
    for line, row in enumerate(rows[1:], start=2):
        if any(len(cell) > MAX_FIELD_CHARS for cell in row):
            raise InputError(f"{origin}:{line}", f"a field is longer than {MAX_FIELD_CHARS} characters")
        if not any(cell.strip() for cell in row):
            continue
        records.append({name: (row[i] if i < len(row) else None) for i, name in enumerate(header)})
    return header, records
