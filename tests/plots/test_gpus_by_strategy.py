"""`plot gpus-by-strategy`: every cell is plan_ranks' worst rank; colour, hatch and host marker follow its verdicts."""
from __future__ import annotations

import pytest

from vramplan.cli.main import main
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.plots import gpus_by_strategy, gpus_by_strategy_figure
from vramplan.plots.gpus_by_strategy import LAYOUTS, NOT_PLANNED, RANKS_DO_NOT_FIT, cell_states, host_fails, node_layout
from vramplan.resolve import resolve_model
from vramplan.specs.parallel import ParallelConfig

GIB = 2**30
LORA = make_run(method="lora")
HOST_RAM = 64 * GIB  # below the 70B checkpoint's CPU copy, above what ZeRO-3's partitioned loading holds


def grid_70b(host_ram=HOST_RAM, counts=(1, 4, 16)):
    return gpus_by_strategy(resolve_model("70b"), get_gpu("a100-40g"), LORA, gpu_counts=counts, host_ram_bytes=host_ram)


def test_rows_are_the_strategies_and_the_offload_row():
    assert [strategy for strategy, _offload in LAYOUTS] == ["ddp", "zero1", "zero2", "fsdp-grad-op", "fsdp", "zero3",
                                                           "zero3"]
    assert LAYOUTS[-1] == ("zero3", "optimizer")


def test_cells_are_plan_ranks_worst_rank_and_host():
    grid = grid_70b()
    model, gpu = resolve_model("70b"), get_gpu("a100-40g")
    for i, (strategy, offload) in enumerate(grid.layouts):
        for j, count in enumerate(grid.gpu_counts):
            gpus, nodes = node_layout(count, 8)
            cluster = plan_ranks(model, gpu, LORA, host_ram_bytes=HOST_RAM,
                                 parallel=ParallelConfig(gpus=gpus, nodes=nodes, strategy=strategy, offload=offload))
            assert grid.required_bytes[i, j] == cluster.worst_rank.breakdown.required_bytes
            assert grid.ranks_fit[i, j] == cluster.worst_rank.breakdown.fits
            assert grid.host_fits[i, j] == cluster.host.fits
    assert node_layout(16, 8) == (8, 2) and node_layout(4, 8) == (4, 1)


def test_figure_has_a_text_per_cell_hatches_where_ranks_do_not_fit_and_a_marker_where_the_host_fails():
    grid = grid_70b()
    figure = gpus_by_strategy_figure(grid)
    axes = figure.axes[0]
    rows, cols = len(grid.layouts), len(grid.gpu_counts)
    assert axes.images[0].get_array().shape == (rows, cols)
    texts = [t.get_text() for t in axes.texts]
    assert texts == [f"{grid.required_bytes[i, j] / GIB:.1f}" for i in range(rows) for j in range(cols)]
    hatched = [p for p in axes.patches if p.get_hatch()]
    assert len(hatched) == int((cell_states(grid) == RANKS_DO_NOT_FIT).sum()) > 0
    markers = [line for line in axes.lines if line.get_marker() == "v"]
    assert len(markers) == int(host_fails(grid).sum()) > 0
    assert not host_fails(grid).all() and grid.ranks_fit.any() and not grid.ranks_fit.all()


def test_more_gpus_never_make_zero3_need_more_per_rank():
    grid = grid_70b(counts=(1, 2, 4, 8, 16, 32))
    zero3 = grid.required_bytes[grid.layouts.index(("zero3", "none"))]
    assert list(zero3) == sorted(zero3, reverse=True)


def test_unknown_host_ram_draws_no_marker_and_a_refused_layout_is_not_planned():
    grid = gpus_by_strategy(resolve_model("8b"), get_gpu("t4"), make_run(method="full", compute_dtype="bf16"),
                            gpu_counts=(1, 2), host_ram_bytes=None)
    assert (cell_states(grid) == NOT_PLANNED).all() and "bf16" in grid.notes[0]
    figure = gpus_by_strategy_figure(grid)
    assert not [line for line in figure.axes[0].lines if line.get_marker() == "v"]
    assert {t.get_text() for t in figure.axes[0].texts} == {"n/a"}
    assert "bf16" in figure.axes[0].get_xlabel()


def test_a_count_that_is_not_whole_nodes_is_an_input_error():
    with pytest.raises(InputError, match="--counts"):
        gpus_by_strategy(resolve_model("7b"), get_gpu("a100-40g"), LORA, gpu_counts=(12,))


def test_cli_writes_the_figure_and_reads_its_flags(tmp_path, capsys):
    out = tmp_path / "layouts.png"
    assert main(["plot", "gpus-by-strategy", "--model", "7b", "--gpu", "a100-40g", "--counts", "1,2",
                 "--host-ram", "unknown", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    for argv, needle in ((["--model", "7b", "--counts", "12"], "--counts"),
                         (["--model", "7b", "--gpu", "8xa100-40g"], "--gpu: 8xa100-40g: the columns are the GPU counts")):
        code = main(["plot", "gpus-by-strategy", *argv, "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
