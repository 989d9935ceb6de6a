"""The main screen looks as recorded, at two terminal sizes.

Regenerate after an intended change (the planner's numbers are on screen too):
    VRAMPLAN_UPDATE_SNAPSHOTS=1 python -m pytest tests/tui/test_tui_snapshots.py
"""
from __future__ import annotations

import asyncio
import difflib
import os
from pathlib import Path

import pytest
from tui_helpers import normalise_svg, svg_text

from vramplan.estimate import make_run
from vramplan.tui.app import ExplorerApp, headless_screenshot

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("VRAMPLAN_UPDATE_SNAPSHOTS") == "1"


@pytest.mark.parametrize("size, model, gpu, fields", [
    ((100, 32), "13b", "t4", {}),
    ((150, 45), "llama-3.1-8b", "rtx3060", {"seq_len": 4096, "micro_batch_size": 2}),  # does not fit: advice shown
])
def test_main_screen_matches_its_snapshot(tmp_path, size, model, gpu, fields):
    name = f"main_{size[0]}x{size[1]}.svg"
    saved = asyncio.run(headless_screenshot(ExplorerApp(model, gpu, make_run(**fields)), tmp_path / name, size))
    actual = normalise_svg(Path(saved).read_text(encoding="utf-8"))
    recorded = SNAPSHOTS / name
    if UPDATE:
        recorded.write_text(actual, encoding="utf-8")
    assert recorded.exists(), f"no snapshot {recorded}: run with VRAMPLAN_UPDATE_SNAPSHOTS=1 to record it"
    expected = recorded.read_text(encoding="utf-8")
    if actual != expected:
        diff = "\n".join(difflib.unified_diff(svg_text(expected), svg_text(actual), "recorded", "now", lineterm=""))
        pytest.fail(f"{name} changed (VRAMPLAN_UPDATE_SNAPSHOTS=1 re-records it if intended):\n"
                    f"{diff or '(same characters; colours or styles differ)'}")
