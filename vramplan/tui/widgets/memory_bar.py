"""A stacked bar of the Breakdown's components against the GPU's capacity."""
from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from vramplan import components
from vramplan.present import gib
from vramplan.present_bar import bar_cells


def short_label(name: str) -> str:
    entry = components.component(name)
    return entry.short_label if entry else name


def colour(name: str) -> str:
    entry = components.component(name)
    return entry.tui_colour if entry else "white"


class MemoryBar(Widget):
    """One cell per 1/width of max(capacity, required); free memory dim, overflow red."""

    breakdown = reactive(None, layout=True)

    def render(self) -> Text:
        breakdown = self.breakdown
        if breakdown is None:
            return Text("")
        width = max(10, self.size.width)
        parts = [(name, value) for name, value in breakdown.components().items() if value > 0]
        segments, capacity_cell = bar_cells(breakdown, width)
        bar = Text()
        for name, cells in segments:
            bar.append("█" * cells, style=colour(name))
        used_cells = sum(cells for _name, cells in segments)
        if used_cells < width:
            bar.append("░" * (width - used_cells), style="grey30")
        else:
            bar.stylize("on red", capacity_cell, width)
        caption = f"capacity {gib(breakdown.capacity_bytes)} GiB"
        marker = Text(" " * width)
        if breakdown.fits:
            marker = Text(caption.rjust(width), style="dim")
        else:
            label = f"▲ {caption}"
            start = max(0, min(capacity_cell - 1, width - len(label)))
            marker = Text(" " * start + label, style="bold red")
        legend = Text()
        for name, value in parts:
            legend.append("■ ", style=colour(name))
            legend.append(f"{short_label(name)} {gib(value)}  ")
        return Text("\n").join([bar, marker, legend])
