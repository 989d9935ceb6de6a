"""Model x GPU matrix: colour = headroom of the run as given, text = the most that fits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vramplan.plots.style import EDGE, MATRIX_CMAP, new_figure, plain_text, readable_text_colour, short_count, to_gib

BATCH_LIMIT = 1024
CELL_KINDS = ("seq", "batch")


@dataclass(frozen=True)
class FitMatrix:
    """`headroom_bytes[i, j]` and `most[i, j]` for models[i] on gpus[j]."""

    models: tuple[str, ...]
    gpus: tuple[str, ...]  # column labels: profile key and capacity
    run: object  # RunConfig
    cell: str  # "seq": most[i, j] is the max sequence length; "batch": the max micro-batch
    limits: np.ndarray  # the solver's limit per cell: a value at its limit is shown as ">= limit"
    headroom_bytes: np.ndarray
    most: np.ndarray


def fit_matrix(models, gpus, run, cell: str = "seq") -> FitMatrix:
    """Plan `run` for every (model, GPU) and solve its max sequence length or micro-batch."""
    from vramplan.errors import InputError
    from vramplan.estimate import plan
    from vramplan.solvers import max_micro_batch, max_seq_len

    if cell not in CELL_KINDS:
        raise InputError("--cell", f"use one of {', '.join(CELL_KINDS)} (got {cell!r})")
    shape = (len(models), len(gpus))
    headroom, most, limits = (np.zeros(shape, dtype=np.int64) for _ in range(3))
    solve = max_seq_len if cell == "seq" else max_micro_batch
    for i, model in enumerate(models):
        # Sequences stop at the model's context window: longer ones fit memory but not the model.
        limits[i] = max(run.seq_len, model.max_position_embeddings) if cell == "seq" else BATCH_LIMIT
        for j, gpu in enumerate(gpus):
            headroom[i, j] = plan(model, gpu, run).headroom_bytes
            most[i, j] = solve(model, gpu, run, limit=int(limits[i, j]))
    gpu_labels = tuple(f"{g.key}\n{to_gib(g.capacity_bytes):.0f} GiB" for g in gpus)
    return FitMatrix(tuple(m.name for m in models), gpu_labels, run, cell, limits, headroom, most)


def _cell_text(value: int, limit: int) -> str:
    if value <= 0:
        return "none"
    return ("\u2265" if value >= limit else "") + short_count(value)


def fit_matrix_figure(matrix: FitMatrix):
    """Heat map of headroom (GiB, cividis, centred on 0); each cell names the max seq/batch.

    Cells whose run does not fit are hatched, so the verdict also reads in greyscale.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    headroom = to_gib(matrix.headroom_bytes.astype(float))
    rows, cols = headroom.shape
    figure = new_figure(1.5 + 1.05 * cols, 1.6 + 0.55 * rows)
    axes = figure.add_subplot()
    norm = TwoSlopeNorm(vcenter=0.0, vmin=min(headroom.min(), -1.0), vmax=max(headroom.max(), 1.0))
    image = axes.imshow(headroom, cmap=MATRIX_CMAP, norm=norm, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            colour = readable_text_colour(image.cmap(norm(headroom[i, j])))
            axes.text(j, i, _cell_text(matrix.most[i, j], matrix.limits[i, j]), ha="center", va="center",
                      fontsize=9, color=colour, fontweight="bold")
            if headroom[i, j] < 0:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                         edgecolor=colour, linewidth=0, alpha=0.45))
    axes.set_xticks(range(cols), [plain_text(gpu) for gpu in matrix.gpus], fontsize=9)
    axes.set_yticks(range(rows), [plain_text(model) for model in matrix.models])
    axes.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    axes.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    axes.grid(which="minor", color=EDGE, linewidth=0.5)
    axes.tick_params(which="minor", length=0)
    run = matrix.run
    fixed = f"batch {run.micro_batch_size}" if matrix.cell == "seq" else f"seq {run.seq_len}"
    what = "max sequence length" if matrix.cell == "seq" else "max micro-batch"
    at_limit = "\u2265: the model's whole context fits" if matrix.cell == "seq" else f"\u2265: {BATCH_LIMIT} or more"
    axes.set_title(f"{run.method}: {what} that fits ({fixed}; {at_limit})\n"
                   f"colour: headroom at batch {run.micro_batch_size} x seq {run.seq_len}; hatched: does not fit",
                   fontsize=10)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.9)
    colorbar.set_label("headroom (GiB)")
    return figure
