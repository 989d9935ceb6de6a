"""`compare` on more than one GPU: rows are plan_ranks' worst rank and host; one-GPU compare is unchanged."""
from __future__ import annotations

import csv
import io
import json

import pytest

from vramplan.cli.main import main
from vramplan.distributed.solve import max_per_rank
from vramplan.estimate import make_run, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.present_bar import CAPACITY_GLYPH, bar_cells, glyphs, text_bar
from vramplan.resolve import resolve_model
from vramplan.solvers import DEFAULT_LIMITS
from vramplan.specs.parallel import ParallelConfig

GIB = 2**30


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cluster(model, gpu, gpus, strategy, host_ram=None, **run):
    return plan_ranks(resolve_model(model), get_gpu(gpu), make_run(**run),
                      parallel=ParallelConfig(gpus=gpus, strategy=strategy), host_ram_bytes=host_ram)


def test_count_prefixes_give_one_row_per_entry_equal_to_plan_ranks(capsys):
    code, out, err = run_cli(capsys, "compare", "--gpus", "4xa100-40g,8xa100-40g,2xh100", "--model", "70b",
                             "--method", "lora", "--strategy", "fsdp", "--host-ram", "2TiB", "--json")
    data = json.loads(out)
    assert code == 0 and err == "" and data["parallel"] == {"strategy": "fsdp"}
    assert [row["name"] for row in data["rows"]] == ["4xa100-40g", "8xa100-40g", "2xh100-sxm"]
    for row, (gpus, gpu) in zip(data["rows"], [(4, "a100-40g"), (8, "a100-40g"), (2, "h100")]):
        expected = cluster("70b", gpu, gpus, "fsdp", 2 << 40, method="lora")
        worst = expected.worst_rank.breakdown
        assert row["world_size"] == gpus and row["strategy"] == "fsdp" and row["worst_rank"] == expected.worst_rank.name
        assert row["required_bytes"] == worst.required_bytes and row["headroom_bytes"] == worst.headroom_bytes
        assert row["peak_allocated_bytes"] == worst.peak_allocated_bytes
        assert row["host_required_bytes"] == expected.host.required_bytes and row["host_ram_bytes"] == 2 << 40
        assert row["verdict"] == ("FITS" if expected.fits else worst.verdict)
        parallel = ParallelConfig(gpus=gpus, strategy="fsdp")
        assert row["max_micro_batch"] == max_per_rank("batch", resolve_model("70b"), get_gpu(gpu), make_run(method="lora"),
                                                      parallel, limit=DEFAULT_LIMITS["batch"])
        assert row["max_seq_len"] == max_per_rank("seq", resolve_model("70b"), get_gpu(gpu), make_run(method="lora"),
                                                  parallel, limit=DEFAULT_LIMITS["seq"])


def test_gpu_count_applies_to_entries_without_a_prefix(capsys):
    code, out, _ = run_cli(capsys, "compare", "--gpus", "a100-40g,2xa100-80g", "--gpu-count", "8", "--model", "13b",
                           "--strategy", "zero3", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["gpu"], r["world_size"]) for r in rows] == [("8xa100-40g", "8"), ("2xa100-80g", "2")]
    assert {"strategy", "world_size", "host_required_bytes"} <= set(rows[0])
    expected = cluster("13b", "a100-40g", 8, "zero3", host_ram=None).host.required_bytes
    assert int(rows[0]["host_required_bytes"]) == expected


def test_host_that_cannot_hold_the_run_is_the_rows_verdict(capsys):
    code, out, _ = run_cli(capsys, "compare", "--gpus", "8xa100-80g", "--model", "7b", "--strategy", "zero3",
                           "--host-ram", "1GiB")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("8xa100-80g"))
    assert "DOES NOT FIT (host)" in row and "zero3" in row and "1.00" in row


def test_models_against_a_counted_gpu(capsys):
    code, out, _ = run_cli(capsys, "compare", "--models", "7b,13b", "--gpu", "4xa100-40g", "--strategy", "fsdp",
                           "--host-ram", "unknown")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("each model on 4 x NVIDIA A100")
    assert [line.split()[0] for line in lines[3:5]] == ["llama-2-7b", "llama-2-13b"]
    assert "not checked (--host-ram unknown)" in out and " ? " in lines[3]


def test_text_rows_carry_the_worst_ranks_bar_and_its_legend(capsys):
    code, out, _ = run_cli(capsys, "compare", "--gpus", "2xt4,8xa100-40g", "--model", "70b", "--method", "lora",
                           "--strategy", "fsdp", "--host-ram", "2TiB")
    assert code == 0
    t4_row = next(line for line in out.splitlines() if line.startswith("2xt4"))
    expected = cluster("70b", "t4", 2, "fsdp", 2 << 40, method="lora").worst_rank.breakdown
    assert not expected.fits and t4_row.rstrip().endswith(text_bar(expected))
    assert CAPACITY_GLYPH in text_bar(expected)
    legend = next(line for line in out.splitlines() if line.startswith("bar:"))
    assert f"{glyphs()['float_weights']} float weights" in legend


def test_a_gpu_that_cannot_run_the_config_is_an_na_row_with_its_reason(capsys):
    code, out, _ = run_cli(capsys, "compare", "--gpus", "2xt4,2xa10g", "--model", "7b", "--compute-dtype", "bf16",
                           "--strategy", "fsdp", "--host-ram", "unknown")
    t4_row = next(line for line in out.splitlines() if line.startswith("2xt4"))
    assert code == 0 and " n/a " in t4_row and "note: 2xt4:" in out and "bf16" in out
    assert "FITS" in next(line for line in out.splitlines() if line.startswith("2xa10g"))


def test_one_gpu_compare_has_no_per_rank_columns(capsys):
    code, out, _ = run_cli(capsys, "compare", "--gpus", "t4,a10g", "--model", "7b")
    assert code == 0 and "strategy" not in out and "max batch" in out and "bar:" not in out


@pytest.mark.parametrize("argv, needle", [
    (["--engine", "vllm", "--gpus", "2xl4", "--model", "7b"], "--gpus: 2xl4: a GPU count"),
    (["--engine", "vllm", "--gpus", "l4", "--gpu-count", "2"], "--gpu-count"),
    (["--gpus", "0xa100-40g"], "--gpus: a GPU count of 0"),
    (["--gpus", "l4", "--offload", "optimizer"], "--strategy"),
    (["--gpus", "2xl4", "--max-num-seqs", "4"], "--max-num-seqs: belongs to --engine vllm"),
    (["--gpus", "t4", "--host-ram", "64GiB"], "--host-ram: belongs to --engine llama.cpp"),  # one GPU: as before
])
def test_bad_multi_gpu_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, "compare", *argv)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_bar_cells_add_up_and_a_plan_that_fits_leaves_free_cells():
    fits = cluster("7b", "a100-80g", 4, "zero3", method="lora").worst_rank.breakdown
    segments, capacity_cell = bar_cells(fits, 20)
    used = sum(cells for _name, cells in segments)
    assert fits.fits and capacity_cell == 20 and used == round(fits.required_bytes / fits.capacity_bytes * 20)
    assert text_bar(fits, 20) == "[" + "".join(glyphs()[n] * c for n, c in segments) + "." * (20 - used) + "]"
