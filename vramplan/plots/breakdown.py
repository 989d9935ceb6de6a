"""One plan as a stacked bar of its components against the GPU's capacity line."""
from __future__ import annotations

import textwrap

from vramplan.plots.style import EDGE, component_label, component_style, new_figure, plain_text, to_gib
from vramplan.present import describe_run


def breakdown_figure(breakdown):
    """Stacked bar: every non-zero component of `breakdown` (GiB), capacity as a dashed line.

    Bottom to top: what `max_memory_allocated` sees at the peak phase, then the allocator
    reserve and the CUDA context, so the top of the bar is what the verdict compares.
    """
    parts = [(name, value) for name, value in breakdown.components().items() if value > 0]
    figure = new_figure(8.0, 5.6)
    axes = figure.add_subplot()
    bottom = 0.0
    for name, value in parts:
        colour, hatch = component_style(name)
        height = to_gib(value)
        axes.bar(0, height, width=0.55, bottom=bottom, color=colour, hatch=hatch, edgecolor=EDGE,
                 linewidth=0.6, label=f"{component_label(name)}: {height:.2f} GiB")
        bottom += height

    capacity = to_gib(breakdown.capacity_bytes)
    axes.axhline(capacity, color="black", linestyle="--", linewidth=1.6)
    axes.text(0.31, capacity, f" {plain_text(breakdown.gpu)} capacity {capacity:.2f} GiB", va="bottom", ha="left", fontsize=9)
    peak = to_gib(breakdown.peak_allocated_bytes)
    axes.plot([-0.36, 0.36], [peak, peak], color="black", linestyle=":", linewidth=1.2)
    axes.text(0.37, peak, f" predicted max_memory_allocated {peak:.2f} GiB", va="center", ha="left", fontsize=8)

    verdict = "fits" if breakdown.fits else "does NOT fit"
    headroom = to_gib(breakdown.headroom_bytes)
    figure.suptitle(f"{plain_text(breakdown.model)} on {plain_text(breakdown.gpu)}: {verdict}\n"
                    f"headroom {headroom:+.2f} GiB, peak in the {breakdown.peak_phase.replace('_', ' ')} phase",
                    fontsize=11)
    figure.supxlabel(plain_text(textwrap.fill(describe_run(breakdown), 110)), fontsize=8)
    axes.set_ylabel("GPU memory (GiB)")
    axes.set_xlim(-0.6, 1.9)
    axes.set_ylim(0, max(bottom, capacity) * 1.1)
    axes.set_xticks([])
    # Legend top-down in the same order as the bar reads top-down.
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                frameon=False, handleheight=1.6, title="at the peak, top to bottom", title_fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    return figure
