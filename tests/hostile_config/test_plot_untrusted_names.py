"""Names from untrusted places (a model folder, a results CSV) are drawn as plain text: a folder
called `$x^2$ $\\frac$` neither typesets nor breaks the figure."""
from __future__ import annotations

import csv
import json

import pytest

from _cli import run_cli

NAME = r"m $x^2$ and $\frac$"
LLAMA = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
         "num_attention_heads": 8, "vocab_size": 1000, "max_position_embeddings": 2048}


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / NAME
    path.mkdir()
    (path / "config.json").write_text(json.dumps(LLAMA))
    return path


def _drawn_literally(figure, name: str) -> None:
    """The figure draws (no mathtext error), no text of it is mathtext, and `name` is shown as it is."""
    from matplotlib import cbook
    from matplotlib.text import Text

    figure.canvas.draw()
    texts = [t.get_text() for t in figure.findobj(Text)]
    assert not [t for t in texts if cbook.is_math_text(t)]
    assert any(name in t.replace(r"\$", "$") for t in texts), texts


def test_every_figure_draws_an_untrusted_model_name_as_plain_text(folder):
    from vramplan.estimate import make_run, plan
    from vramplan.gpus import get_gpu
    from vramplan.plots import (breakdown_figure, fit_matrix, fit_matrix_figure, max_seq_curves, max_seq_figure,
                                seq_components, seq_components_figure)
    from vramplan.resolve import resolve_model

    model, gpu, run = resolve_model(str(folder)), get_gpu("t4"), make_run()
    assert model.name == NAME
    _drawn_literally(breakdown_figure(plan(model, gpu, run)), NAME)
    _drawn_literally(fit_matrix_figure(fit_matrix([model], [gpu], run)), NAME)
    _drawn_literally(max_seq_figure(max_seq_curves(model, [gpu], run, [1, 2])), NAME)
    _drawn_literally(seq_components_figure(seq_components(model, gpu, run, [256, 512, 1024])), NAME)


def test_validation_figure_draws_a_method_from_a_results_csv_as_plain_text(tmp_path):
    from vramplan.plots import load_validation_results, validation_figure

    with (tmp_path / "r.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "method", "gpu", "predicted_peak_bytes", "measured_peak_bytes", "status"])
        writer.writerow(["7b", r"$\frac$", "t4", 2**30, 2**30, "ok"])
    _drawn_literally(validation_figure(load_validation_results([tmp_path])), r"$\frac$")


def test_plot_breakdown_of_a_dollar_named_model_folder_writes_the_png(folder, tmp_path):
    out = tmp_path / "plan.png"
    result = run_cli("plot", "breakdown", "--model", str(folder), "--gpu", "t4", "--out", str(out))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert out.stat().st_size > 0
