"""`vramplan tui`: an absurd --size or a --screenshot path that cannot be written is one line, exit 2 (issue 14).

The path is checked before the app is drawn, so these need no textual."""
from __future__ import annotations

import pytest

from hostile_files import assert_refused


@pytest.mark.parametrize("size", ["100000x100000", "1001x40", "²x40", "120x40x1", "39x12"])
def test_tui_size_out_of_range_or_not_ascii_is_one_line(size):
    assert "--size" in assert_refused("tui", "--model", "7b", "--gpu", "t4", "--screenshot", "x.svg", "--size", size)


def test_tui_screenshot_into_a_missing_folder_is_one_line(tmp_path):
    err = assert_refused("tui", "--model", "7b", "--gpu", "t4", "--screenshot", str(tmp_path / "none" / "x.svg"))
    assert "--screenshot" in err and "does not exist" in err


def test_tui_screenshot_onto_a_folder_is_one_line(tmp_path):
    assert "is a folder" in assert_refused("tui", "--model", "7b", "--gpu", "t4", "--screenshot", str(tmp_path))


def test_tui_screenshot_below_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "--screenshot" in assert_refused("tui", "--model", "7b", "--gpu", "t4",
                                            "--screenshot", str(tmp_path / "file" / "x.svg"))


def test_tui_screenshot_with_a_name_over_255_bytes_is_one_line(tmp_path):
    assert "--screenshot" in assert_refused("tui", "--model", "7b", "--gpu", "t4",
                                            "--screenshot", str(tmp_path / ("a" * 300 + ".svg")))
