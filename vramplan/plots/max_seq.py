"""Max sequence length against micro-batch size, one curve per GPU."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vramplan.plots.style import log2_axes, new_figure, plain_text, series_style

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
SEQ_LIMIT = 1_048_576


@dataclass(frozen=True)
class MaxSeqCurves:
    """`max_seq[j, k]`: the longest sequence that fits on gpus[j] at batches[k] (0: none)."""

    model: str
    gpus: tuple[str, ...]
    batches: tuple[int, ...]
    run: object  # RunConfig
    max_seq: np.ndarray


def max_seq_curves(model, gpus, run, batches=DEFAULT_BATCHES) -> MaxSeqCurves:
    from vramplan.solvers import max_seq_len

    batches = tuple(int(b) for b in batches)
    table = np.array([[max_seq_len(model, gpu, run.model_copy(update={"micro_batch_size": batch}), limit=SEQ_LIMIT)
                       for batch in batches] for gpu in gpus], dtype=np.int64).reshape(len(gpus), len(batches))
    return MaxSeqCurves(model.name, tuple(g.key for g in gpus), batches, run, table)


def max_seq_figure(curves: MaxSeqCurves):
    """Log-log curves; a GPU on which nothing fits is named in the legend as such."""
    figure = new_figure(7.5, 4.8)
    axes = figure.add_subplot()
    batches = np.array(curves.batches)
    for j, gpu in enumerate(curves.gpus):
        seqs = curves.max_seq[j]
        fits = seqs > 0
        label = plain_text(gpu if fits.any() else f"{gpu} (nothing fits)")
        axes.plot(batches[fits], seqs[fits], label=label, **series_style(j))
    log2_axes(axes, batches, [str(b) for b in batches], bool((curves.max_seq > 0).any()),
              "nothing fits at these batch sizes")
    axes.set_xlabel("micro-batch size")
    axes.set_ylabel("max sequence length (tokens)")
    run = curves.run
    axes.set_title(f"{plain_text(curves.model)}, {run.method}: longest sequence that fits per micro-batch", fontsize=11)
    axes.legend(title="GPU", fontsize=8, title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    axes.grid(which="both", alpha=0.3)
    return figure
