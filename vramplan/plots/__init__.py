"""Figures of vramplan's answers (matplotlib, the `plots` extra).

Each plot has two steps: a data function that asks the planner (plan, solvers,
`phase_components`) and returns plain numbers, and a `*_figure` function that draws them
and returns the matplotlib `Figure`; `save_figure` writes it. Nothing here computes memory.

Importing this package is cheap: matplotlib is imported only when a figure is drawn.

    from vramplan.plots import breakdown_figure, save_figure
    save_figure(breakdown_figure(vramplan.estimate(model="13b", gpu="t4")), "plan.png")
"""
from __future__ import annotations

from vramplan.plots.breakdown import breakdown_figure
from vramplan.plots.fit_matrix import FitMatrix, fit_matrix, fit_matrix_figure
from vramplan.plots.gpus_by_strategy import StrategyGrid, gpus_by_strategy, gpus_by_strategy_figure
from vramplan.plots.max_seq import MaxSeqCurves, max_seq_curves, max_seq_figure
from vramplan.plots.output import FIGURE_FORMATS, figure_bytes, output_path, save_figure
from vramplan.plots.seq_components import SeqComponents, seq_components, seq_components_figure
from vramplan.plots.validation import ValidationResults, load_validation_results, validation_figure

__all__ = [
    "FIGURE_FORMATS", "FitMatrix", "MaxSeqCurves", "SeqComponents", "StrategyGrid", "ValidationResults",
    "breakdown_figure", "figure_bytes", "fit_matrix", "fit_matrix_figure", "gpus_by_strategy",
    "gpus_by_strategy_figure", "load_validation_results",
    "max_seq_curves", "max_seq_figure", "output_path", "save_figure", "seq_components",
    "seq_components_figure", "validation_figure",
]
