"""Strategy x GPU-count matrix for one model and GPU: does each layout fit, and what one rank needs.

Rows are the data-parallel strategies (and ZeRO-3 with the optimizer offloaded), columns the
number of GPUs; every cell is `estimate.plan_ranks` for that layout. Colour says whether every
rank fits the GPU; a cell whose ranks fit but whose node's host RAM does not carries its own
marker; the text is the GiB the worst rank needs.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np

from vramplan.plots.style import EDGE, OKABE_ITO, new_figure, plain_text, readable_text_colour, to_gib

LAYOUTS = (("ddp", "none"), ("zero1", "none"), ("zero2", "none"), ("fsdp-grad-op", "none"), ("fsdp", "none"),
           ("zero3", "none"), ("zero3", "optimizer"))
"""(strategy, offload) per row, from the least to the most sharded."""
GPU_COUNTS = (1, 2, 4, 8, 16, 32)
GPUS_PER_NODE = 8

# Cell states; the colours are Okabe-Ito (bluish green, vermillion, grey), not-fit cells also hatched.
FITS, RANKS_DO_NOT_FIT, NOT_PLANNED = 0, 1, 2
_FILLS = {FITS: OKABE_ITO[2], RANKS_DO_NOT_FIT: OKABE_ITO[5], NOT_PLANNED: "#BBBBBB"}
_HOST_MARKER = OKABE_ITO[6]  # yellow triangle with a black edge


@dataclass(frozen=True)
class StrategyGrid:
    """`required_bytes[i, j]` (the worst rank's need) and the verdicts for layouts[i] on gpu_counts[j] GPUs."""

    model: str
    gpu: str
    capacity_bytes: int
    run: object  # RunConfig
    layouts: tuple[tuple[str, str], ...]
    gpu_counts: tuple[int, ...]
    gpus_per_node: int
    host_ram_bytes: int | None
    required_bytes: np.ndarray
    ranks_fit: np.ndarray  # bool
    host_fits: np.ndarray  # object: True, False or None (host RAM not known)
    planned: np.ndarray  # bool: False where the planner refused the layout
    notes: tuple[str, ...]  # the planner's reasons for the cells it refused, each once


def layout_label(strategy: str, offload: str) -> str:
    return strategy if offload == "none" else f"{strategy} + offload {offload}"


def node_layout(count: int, gpus_per_node: int) -> tuple[int, int]:
    """(GPUs per node, nodes) for `count` GPUs: one node up to `gpus_per_node`, whole nodes beyond."""
    from vramplan.errors import InputError

    if count <= gpus_per_node:
        return count, 1
    if count % gpus_per_node:
        raise InputError("--counts", f"{count} GPUs is not a whole number of {gpus_per_node}-GPU nodes "
                                     "(--gpus-per-node)")
    return gpus_per_node, count // gpus_per_node


def gpus_by_strategy(model, gpu, run, *, layouts=LAYOUTS, gpu_counts=GPU_COUNTS, gpus_per_node: int = GPUS_PER_NODE,
                  host_ram_bytes: int | None = None, margin_bytes: int = 0) -> StrategyGrid:
    """plan_ranks for every (strategy, offload) and GPU count; a layout the planner refuses is not planned."""
    from vramplan.errors import InputError
    from vramplan.estimate import plan_ranks
    from vramplan.specs.parallel import ParallelConfig

    shape = (len(layouts), len(gpu_counts))
    required = np.zeros(shape, dtype=np.int64)
    ranks_fit, planned = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    host_fits = np.full(shape, None, dtype=object)
    notes = []
    for i, (strategy, offload) in enumerate(layouts):
        for j, count in enumerate(gpu_counts):
            gpus, nodes = node_layout(count, gpus_per_node)
            try:
                parallel = ParallelConfig(gpus=gpus, nodes=nodes, strategy=strategy, offload=offload)
                cluster = plan_ranks(model, gpu, run, parallel=parallel, margin_bytes=margin_bytes,
                                     host_ram_bytes=host_ram_bytes)
            except (InputError, ValueError) as exc:  # ValueError: ParallelConfig's own refusal
                reason = str(exc).splitlines()[0]
                if reason not in notes:
                    notes.append(reason)
                continue
            worst = cluster.worst_rank.breakdown
            required[i, j], ranks_fit[i, j], planned[i, j] = worst.required_bytes, worst.fits, True
            host_fits[i, j] = cluster.host.fits
    return StrategyGrid(model.name, gpu.key, gpu.capacity_bytes, run, tuple(layouts), tuple(gpu_counts), gpus_per_node,
                        host_ram_bytes, required, ranks_fit, host_fits, planned, tuple(notes))


def cell_states(grid: StrategyGrid) -> np.ndarray:
    return np.where(~grid.planned, NOT_PLANNED, np.where(grid.ranks_fit, FITS, RANKS_DO_NOT_FIT))


def host_fails(grid: StrategyGrid) -> np.ndarray:
    """Cells whose node's host RAM is known and too small (each gets the host marker)."""
    return np.vectorize(lambda value: value is False, otypes=[bool])(grid.host_fits) & grid.planned


def _count_label(count: int, gpus_per_node: int) -> str:
    gpus, nodes = (count, 1) if count <= gpus_per_node else (gpus_per_node, count // gpus_per_node)
    return f"{count}" if nodes == 1 else f"{count}\n{nodes} x {gpus}"


def gpus_by_strategy_figure(grid: StrategyGrid):
    """Cells coloured by the ranks' verdict (hatched when they do not fit), text = GiB per rank,
    a triangle in the corner where the host RAM of a node is too small."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    states = cell_states(grid)
    rows, cols = states.shape
    figure = new_figure(2.6 + 0.95 * cols, 2.2 + 0.5 * rows)
    axes = figure.add_subplot()
    cmap = ListedColormap([_FILLS[FITS], _FILLS[RANKS_DO_NOT_FIT], _FILLS[NOT_PLANNED]])
    axes.imshow(states, cmap=cmap, vmin=-0.5, vmax=2.5, aspect="auto")
    host = host_fails(grid)
    for i in range(rows):
        for j in range(cols):
            colour = readable_text_colour(cmap(int(states[i, j])))
            text = "n/a" if states[i, j] == NOT_PLANNED else f"{to_gib(grid.required_bytes[i, j]):.1f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=9, color=colour, fontweight="bold")
            if states[i, j] == RANKS_DO_NOT_FIT:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                         edgecolor=colour, linewidth=0, alpha=0.35))
            if host[i, j]:
                axes.plot(j + 0.36, i - 0.28, marker="v", markersize=8, color=_HOST_MARKER,
                          markeredgecolor="black", markeredgewidth=0.8, linestyle="none")
    axes.set_xticks(range(cols), [_count_label(count, grid.gpus_per_node) for count in grid.gpu_counts], fontsize=9)
    axes.set_yticks(range(rows), [layout_label(*layout) for layout in grid.layouts], fontsize=9)
    reasons = [textwrap.shorten(f"n/a: {note}", 110) for note in grid.notes[:2]]
    axes.set_xlabel("\n".join([f"GPUs ({grid.gpus_per_node} per node beyond one node)", *reasons]), fontsize=9)
    axes.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    axes.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    axes.grid(which="minor", color=EDGE, linewidth=0.5)
    axes.tick_params(which="minor", length=0)
    run = grid.run
    host = "host RAM not checked" if grid.host_ram_bytes is None else f"host RAM {to_gib(grid.host_ram_bytes):.0f} GiB a node"
    axes.set_title(f"{plain_text(grid.model)} on {plain_text(grid.gpu)} ({to_gib(grid.capacity_bytes):.1f} GiB): "
                   f"{run.method}, batch {run.micro_batch_size} x seq {run.seq_len} per rank\n"
                   f"text: GiB the worst rank needs; {host}", fontsize=10)
    handles = [Patch(facecolor=_FILLS[FITS], edgecolor=EDGE, label="every rank fits"),
               Patch(facecolor=_FILLS[RANKS_DO_NOT_FIT], edgecolor=EDGE, hatch="//", label="a rank does not fit"),
               Line2D([], [], marker="v", color=_HOST_MARKER, markeredgecolor="black", linestyle="none",
                      markersize=8, label="host RAM too small")]
    if (states == NOT_PLANNED).any():
        handles.append(Patch(facecolor=_FILLS[NOT_PLANNED], edgecolor=EDGE, label="n/a: cannot run"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return figure
