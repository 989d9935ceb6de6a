"""Plot functions draw what the planner says: checked through the Figure objects they return."""
from __future__ import annotations

import numpy as np
import pytest
from _plot_data import GIB, SYNTHETIC_ROWS, write_synthetic_results

from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.plots import (breakdown_figure, fit_matrix, fit_matrix_figure, load_validation_results,
                            max_seq_curves, max_seq_figure, seq_components, seq_components_figure,
                            validation_figure)
from vramplan.plots.seq_components import seq_grid
from vramplan.resolve import resolve_model
from vramplan.solvers import max_micro_batch, max_seq_len

QLORA = make_run()


def models(*names):
    return [resolve_model(name) for name in names]


def gpus(*names):
    return [get_gpu(name) for name in names]


def bars(figure):
    from matplotlib.patches import Rectangle

    return [p for p in figure.axes[0].patches if isinstance(p, Rectangle) and p.get_height() > 0]


# --- breakdown -------------------------------------------------------------------------------

def test_breakdown_bar_has_one_segment_per_nonzero_component_and_stacks_to_required():
    breakdown = plan(resolve_model("13b"), get_gpu("t4"), QLORA)
    figure = breakdown_figure(breakdown)
    segments = bars(figure)
    nonzero = [v for v in breakdown.components().values() if v]
    assert len(segments) == len(nonzero)
    assert sum(s.get_height() for s in segments) == pytest.approx(breakdown.required_bytes / GIB)
    capacity_lines = [line for line in figure.axes[0].lines if line.get_linestyle() == "--"]
    assert capacity_lines[0].get_ydata()[0] == pytest.approx(breakdown.capacity_bytes / GIB)


def test_breakdown_bar_grows_with_sequence_length():
    short = plan(resolve_model("13b"), get_gpu("t4"), QLORA)
    long = plan(resolve_model("13b"), get_gpu("t4"), QLORA.model_copy(update={"seq_len": 4096}))
    heights = [sum(s.get_height() for s in bars(breakdown_figure(b))) for b in (short, long)]
    assert heights[1] > heights[0]
    assert "does NOT fit" in breakdown_figure(plan(resolve_model("70b"), get_gpu("t4"), QLORA))._suptitle.get_text()


# --- fit matrix ------------------------------------------------------------------------------

@pytest.mark.parametrize("names, gpu_names", [(("1b", "7b"), ("t4", "3090", "a100")), (("1b", "8b", "70b"), ("t4", "a100"))])
def test_fit_matrix_has_one_cell_per_model_and_gpu(names, gpu_names):
    matrix = fit_matrix(models(*names), gpus(*gpu_names), QLORA)
    figure = fit_matrix_figure(matrix)
    axes = figure.axes[0]
    assert axes.images[0].get_array().shape == (len(names), len(gpu_names))
    assert len(axes.texts) == len(names) * len(gpu_names)
    assert [t.get_text() for t in axes.get_yticklabels()] == [m.name for m in models(*names)]
    hatched = [p for p in axes.patches if p.get_hatch()]
    assert len(hatched) == int((matrix.headroom_bytes < 0).sum())


def test_fit_matrix_cells_are_the_solver_answers():
    chosen_models, chosen_gpus = models("8b", "70b"), gpus("t4", "a100")
    matrix = fit_matrix(chosen_models, chosen_gpus, QLORA)
    for i, model in enumerate(chosen_models):
        for j, gpu in enumerate(chosen_gpus):
            limit = max(QLORA.seq_len, model.max_position_embeddings)
            assert matrix.most[i, j] == max_seq_len(model, gpu, QLORA, limit=limit)
            assert matrix.headroom_bytes[i, j] == plan(model, gpu, QLORA).headroom_bytes
    texts = [t.get_text() for t in fit_matrix_figure(matrix).axes[0].texts]
    assert texts[2] == "none"  # 70b on a T4: nothing fits
    batches = fit_matrix(chosen_models[:1], chosen_gpus[1:], QLORA, cell="batch")
    assert batches.most[0, 0] == max_micro_batch(chosen_models[0], chosen_gpus[1], QLORA, limit=1024)


def test_fit_matrix_rejects_unknown_cell_kind():
    with pytest.raises(InputError, match="--cell"):
        fit_matrix(models("1b"), gpus("t4"), QLORA, cell="rank")


# --- max-seq curves --------------------------------------------------------------------------

def test_max_seq_curves_one_line_per_gpu_with_solver_values():
    model, chosen = resolve_model("13b"), gpus("t4", "a100")
    curves = max_seq_curves(model, chosen, QLORA, batches=(1, 2, 4))
    figure = max_seq_figure(curves)
    lines = [line for line in figure.axes[0].lines if line.get_label() in ("t4", "a100-80g")]
    assert len(lines) == 2
    expected = [max_seq_len(model, chosen[0], QLORA.model_copy(update={"micro_batch_size": b})) for b in (1, 2, 4)]
    assert list(lines[0].get_ydata()) == expected
    assert expected == sorted(expected, reverse=True)
    assert all(lines[1].get_ydata() > lines[0].get_ydata())


def test_max_seq_names_a_gpu_where_nothing_fits():
    curves = max_seq_curves(resolve_model("70b"), gpus("t4"), QLORA, batches=(1, 2))
    figure = max_seq_figure(curves)
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert "t4 (nothing fits)" in labels
    assert any("nothing fits" in t.get_text() for t in figure.axes[0].texts)
    from vramplan.plots import figure_bytes

    assert figure_bytes(figure, "png")[:4] == b"\x89PNG"  # drawable even with no point to show


# --- seq components --------------------------------------------------------------------------

def test_seq_components_pick_the_peak_phase_of_the_scalar_plan_at_every_point():
    model, gpu = resolve_model("8b"), get_gpu("4090")
    seqs = seq_grid(128, 16384, 9)
    data = seq_components(model, gpu, QLORA, seqs)
    for k, seq in enumerate(seqs):
        scalar = plan(model, gpu, QLORA.model_copy(update={"seq_len": int(seq)}))
        assert data.peak_phase[k] == scalar.peak_phase
        assert data.required_bytes[k] == pytest.approx(scalar.required_bytes, abs=1)
        for name, value in scalar.components().items():
            assert data.components[name][k] == pytest.approx(value, abs=1), (seq, name)


def test_seq_components_figure_stacks_nonzero_components_and_marks_logits_takeover():
    from matplotlib.collections import PolyCollection

    data = seq_components(resolve_model("8b"), get_gpu("4090"), QLORA, seq_grid(128, 32768, 24))
    figure = seq_components_figure(data)
    areas = [c for c in figure.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(areas) == sum(1 for v in data.components.values() if np.any(v > 0))
    assert "logits_loss" in data.takeovers()  # 128k vocabulary: logits outgrow everything else
    assert any("largest from" in t.get_text() for t in figure.axes[0].texts)
    assert 0 < data.longest_fitting() < 32768


def test_seq_components_change_with_the_model():
    seqs = seq_grid(256, 8192, 6)
    small = seq_components(resolve_model("1b"), get_gpu("a100"), QLORA, seqs)
    large = seq_components(resolve_model("13b"), get_gpu("a100"), QLORA, seqs)
    assert np.all(large.required_bytes > small.required_bytes)


# --- validation scatter (SYNTHETIC data only) -------------------------------------------------

def test_validation_scatter_plots_completed_runs_and_counts_oom(synthetic_results):
    results = load_validation_results([synthetic_results])
    figure = validation_figure(results, band=0.1)
    points = sum(len(c.get_offsets()) for c in figure.axes[0].collections if c.get_offsets().ndim == 2
                 and c.get_label() and not c.get_label().startswith("prediction"))
    assert points == 3  # the oom row has no measurement
    title = figure.axes[0].get_title()
    assert "3 runs measured, 2 within \u00b110%" in title and "1 OOM" in title and "other" not in title


def test_validation_counts_harness_rows_that_were_not_measured(synthetic_results):
    write_synthetic_results(synthetic_results / "synthetic_cpu.csv", [
        ("llama-3.2-1b", "qlora", "cpu", 128, 1.0 * GIB, "", "not_measured", "synthetic (test)"),
        ("llama-3.2-1b", "qlora", "cpu", 128, 1.0 * GIB, "", "error", "synthetic (test)"),
    ])
    title = validation_figure(load_validation_results([synthetic_results])).axes[0].get_title()
    assert "3 runs measured" in title and "2 other row(s)" in title


def test_validation_accepts_gpu_column_and_several_files(tmp_path, synthetic_results):
    columns = ("model", "method", "gpu", "predicted_peak_bytes", "measured_peak_bytes", "status")
    write_synthetic_results(synthetic_results / "synthetic_t4.csv",
                            [("llama-2-7b", "qlora", "t4", 5 * GIB, 5 * GIB, "ok")], columns)
    results = load_validation_results([synthetic_results])
    assert len(results.model) == len(SYNTHETIC_ROWS) + 1
    assert "t4" in results.gpu


@pytest.mark.parametrize("columns, rows, match", [
    (("model", "method", "gpu", "predicted_peak_bytes", "status"), [], "missing column.*measured_peak_bytes"),
    (("model", "method", "predicted_peak_bytes", "measured_peak_bytes", "status"), [], "gpu or device_name"),
    (("model", "method", "gpu", "predicted_peak_bytes", "measured_peak_bytes", "status"),
     [("7b", "qlora", "t4", "1", "1", "")], "status is empty"),
    (("model", "method", "gpu", "predicted_peak_bytes", "measured_peak_bytes", "status"),
     [("7b", "qlora", "t4", "lots", "1", "ok")], "must be a number"),
])
def test_validation_bad_csv_is_a_one_line_error(tmp_path, columns, rows, match):
    path = write_synthetic_results(tmp_path / "bad.csv", rows, columns)
    with pytest.raises(InputError, match=match) as caught:
        load_validation_results([path])
    assert "\n" not in str(caught.value)


def test_validation_missing_results_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no validation CSV files"):
        load_validation_results([tmp_path])
    with pytest.raises(InputError, match="no such file or folder"):
        load_validation_results([tmp_path / "nowhere"])
