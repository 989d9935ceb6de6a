"""Where figures and reports go: the file type comes from the extension, checked up front."""
from __future__ import annotations

import io
from pathlib import Path

from vramplan.errors import InputError

FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

# No dates in SVG/PDF files, so the same plot gives the same bytes.
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}
DPI = 150


def output_path(text: str, formats: dict[str, str], field: str = "--out") -> tuple[Path, str]:
    """The path and its format, or an InputError before any work is done."""
    path = Path(str(text)).expanduser()
    allowed = ", ".join(formats)
    if not path.name or path.is_dir():
        raise InputError(field, f"give a file name ending in {allowed} (got {text!r})")
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        got = f"'{path.suffix}'" if path.suffix else "no extension"
        raise InputError(field, f"unknown file type {got} in {text!r}: use {allowed}")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(field, f"folder {str(folder)!r} does not exist (create it first)")
    return path, fmt


def write_bytes(path: Path, data: bytes | str, field: str = "--out") -> None:
    """Write a file; an OS refusal becomes a one-line InputError naming the path."""
    try:
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    except OSError as exc:
        raise InputError(field, f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def figure_bytes(figure, fmt: str = "png") -> bytes:
    """The figure encoded as `fmt` (png, svg or pdf)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
    return buffer.getvalue()


def save_figure(figure, path: str | Path, field: str = "--out") -> Path:
    """Write `figure` to `path`; the extension (.png, .svg, .pdf) picks the format."""
    target, fmt = output_path(str(path), FIGURE_FORMATS, field)
    write_bytes(target, figure_bytes(figure, fmt), field)
    return target
