"""A Breakdown as a short stacked bar: how many cells each component takes, and the text form.

Shared by the TUI's MemoryBar (coloured cells) and `compare`'s per-rank column (one letter per
component). One cell is 1/width of the larger of the GPU's capacity and what the plan needs, so
a plan that does not fit fills the bar and the capacity falls inside it.
"""
from __future__ import annotations

from vramplan import components

FREE_GLYPH = "."
CAPACITY_GLYPH = "|"


def bar_cells(breakdown, width: int) -> tuple[list[tuple[str, int]], int]:
    """([(component, cells)] for the components above zero, in the registry's order; the capacity's cell).

    Cumulative rounding: a segment ends at round(cumulative bytes / scale x width), so the
    segments add up to round(required / scale x width) with no drift, scale = max(capacity, required).
    """
    scale = max(breakdown.capacity_bytes, breakdown.required_bytes, 1)
    segments, cumulative, used = [], 0, 0
    for name, value in breakdown.components().items():
        if value <= 0:
            continue
        cumulative += value
        end = round(cumulative / scale * width)
        segments.append((name, end - used))
        used = end
    return segments, round(breakdown.capacity_bytes / scale * width)


def glyphs() -> dict[str, str]:
    """Component name -> one capital letter: the first letter of its label not taken by a
    component earlier in the registry (quantized weights Q, quant state U, float weights F, ...)."""
    taken: dict[str, str] = {}
    for entry in components.all_components():
        letters = [c.upper() for c in entry.short_label if c.isalpha()]
        spare = next((c for c in letters if c not in taken.values()), None)
        if spare is None:
            spare = next(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" if c not in taken.values())
        taken[entry.name] = spare
    return taken


def glyph(name: str) -> str:
    return glyphs().get(name, "?")


def text_bar(breakdown, width: int = 20) -> str:
    """`[FFFFFFFFFGA.........]`: one letter per cell of each component, free cells as dots; a plan
    that does not fit fills the width and a `|` marks where the GPU's capacity ends."""
    segments, capacity_cell = bar_cells(breakdown, width)
    letters = glyphs()
    cells = "".join(letters.get(name, "?") * count for name, count in segments)
    cells += FREE_GLYPH * (width - len(cells))
    if not breakdown.fits and capacity_cell < width:
        cells = cells[:capacity_cell] + CAPACITY_GLYPH + cells[capacity_cell:]
    return f"[{cells}]"


def text_legend(names) -> str:
    """`F float weights, G gradients, ...` for the components `names` (in the registry's order)."""
    letters = glyphs()
    shown = sorted(set(names), key=components.order)
    return ", ".join(f"{letters.get(name, '?')} {components.label(name).split(' (')[0]}" for name in shown)
