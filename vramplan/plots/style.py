"""One look for every figure: colour-blind-safe colours, hatches for greyscale, GiB axes.

Colours are the Okabe-Ito palette (Okabe & Ito 2008, "Color Universal Design"); every
series also differs by hatch, marker or line style, so a greyscale print still tells
them apart. Matrices use cividis, whose lightness rises monotonically.
"""
from __future__ import annotations

from vramplan import components
from vramplan.present import GIB

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
EDGE = "#333333"
MATRIX_CMAP = "cividis"

def series_style(index: int) -> dict:
    """Colour, marker and line style of the index-th series: every line differs in all three."""
    return dict(color=OKABE_ITO[index % len(OKABE_ITO)], marker=MARKERS[index % len(MARKERS)],
                linestyle=LINESTYLES[index % len(LINESTYLES)], linewidth=1.8)


def log2_axes(axes, ticks, tick_labels, has_points: bool, empty_text: str) -> None:
    """Both axes in powers of two with compact labels; a log axis cannot show an empty plot, so a
    plot with no point says `empty_text` instead."""
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, tick_labels)
    if has_points:
        axes.set_yscale("log", base=2)
        axes.yaxis.set_major_formatter(lambda value, _pos: short_count(value) if value >= 1 else "")
    else:
        axes.text(0.5, 0.5, empty_text, transform=axes.transAxes, ha="center", va="center")


def plain_text(text: str) -> str:
    """`text` drawn as it is: every `$` escaped, so matplotlib never reads an untrusted name (a model
    folder, a GPU profile, a results file's column) as mathtext, which would typeset `$x^2$` and fail
    the whole figure on `$\\frac$`. Backslashes outside `$...$` are drawn literally already."""
    return str(text).replace("$", r"\$")


def component_label(name: str) -> str:
    return components.label(name)


def component_style(name: str) -> tuple[str, str]:
    """(fill colour, hatch) of a Breakdown component (`vramplan.components`), the same in every figure;
    no two hatches repeat except the plain fills, which differ in lightness."""
    entry = components.component(name)
    return (entry.plot_colour, entry.plot_hatch) if entry else ("#DDDDDD", "")


def to_gib(nbytes):
    return nbytes / GIB


def new_figure(width: float, height: float):
    """A Figure drawn by the Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def readable_text_colour(rgba) -> str:
    """Black or white, whichever reads better on a fill of colour `rgba`."""
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def short_count(value: int) -> str:
    """4096 -> '4k', 12800 -> '12.5k', 1048576 -> '1M': compact labels for cells."""
    value = int(value)
    if value >= 2**20 and value % 2**20 == 0:
        return f"{value // 2**20}M"
    if value >= 1024:
        text = f"{value / 1024:.1f}".removesuffix(".0")
        return f"{text}k"
    return str(value)
