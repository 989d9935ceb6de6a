"""Fixtures for the plot and report tests."""
from __future__ import annotations

import pytest
from _plot_data import SYNTHETIC_ROWS, write_synthetic_results


@pytest.fixture
def synthetic_results(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    write_synthetic_results(folder / "synthetic_h100.csv", SYNTHETIC_ROWS)
    return folder
