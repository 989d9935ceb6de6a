"""Sweep grids and the integer flags outside the run configuration, through the real CLI (issue 14)."""
from __future__ import annotations

import csv
import io

import pytest

from hostile_files import assert_refused, run_cli


def test_sweep_of_a_grid_past_int64_prints_exact_positive_bytes_and_does_not_fit():
    rc, out, err, _ = run_cli("sweep", "--model", "7b", "--gpu", "t4", "--batch", "1048576", "--seq", "16777216", "--csv")
    assert rc == 0, err
    (row,) = csv.DictReader(io.StringIO(out))
    assert int(row["peak_allocated_bytes"]) > 2**63 and int(row["required_bytes"]) > int(row["peak_allocated_bytes"])
    assert row["fits"] == "False" and int(row["headroom_bytes"]) < 0


def test_sweep_grid_of_millions_of_cells_is_refused_before_it_is_built():
    many = ",".join(str(n) for n in range(1, 2001))
    err = assert_refused("sweep", "--model", "7b", "--gpu", "t4", "--batch", many, "--seq", many,
                         "--rank", ",".join(str(n) for n in range(1, 51)))
    assert "--batch/--seq/--rank/--method" in err and "at most" in err


@pytest.mark.parametrize("item", ["²", "٣", "1_000", "99999999999999999999", "0"])
def test_sweep_list_item_that_is_not_an_ascii_positive_integer_is_one_line(item):
    assert "--batch" in assert_refused("sweep", "--model", "7b", "--gpu", "t4", "--batch", f"1,{item}")


@pytest.mark.parametrize("args", [
    ("plot", "seq-components", "--model", "7b", "--gpu", "t4", "--seq-max", str(2**64)),
    ("plot", "seq-components", "--model", "7b", "--gpu", "t4", "--seq-max", str(2**40)),
    ("plot", "seq-components", "--model", "7b", "--gpu", "t4", "--points", "²"),
    ("max", "batch", "--model", "7b", "--gpu", "t4", "--limit", "4611686018427387904"),
    ("max", "batch", "--model", "7b", "--gpu", "t4", "--limit", "٣"),
    ("validate", "report", "--worst", str(2**63)),
], ids=lambda a: " ".join(a[:2] + a[-2:]))
def test_integer_flags_outside_the_run_are_bounded_one_line_errors(args):
    assert args[-2] in assert_refused(*args)


@pytest.mark.parametrize("dimension, limit", [("batch", 2**20 + 1), ("rank", 2**16 + 1), ("seq", 2**24 + 1)])
def test_max_limit_past_the_fields_bound_is_refused_so_no_answer_is_a_run_fit_refuses(dimension, limit):
    err = assert_refused("max", dimension, "--model", "tinyllama-1.1b", "--gpu", "256TiB", "--method", "lora",
                         "--limit", str(limit))
    assert "--limit" in err
    assert f"{2**24:,}" in err if dimension == "seq" else f"max {dimension} must be at most" in err
