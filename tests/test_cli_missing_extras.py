"""Without an extra installed, a command says which extra to install: one line, exit 2.

The optional packages are made unimportable in a subprocess (`sys.modules[name] = None`
makes `import name` raise ImportError), so nothing has to be uninstalled.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vramplan.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[1]
BLOCK_AND_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from vramplan.cli.main import main
sys.exit(main({argv!r}))
"""


def run_without(blocked: tuple[str, ...], argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    code = BLOCK_AND_RUN.format(blocked=blocked, argv=argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)


CASES = [
    ("plots", ["plot", "breakdown", "--model", "13b", "--gpu", "t4", "--out", "plan.png"]),
    ("plots", ["plot", "fit-matrix", "--models", "7b", "--gpus", "t4", "--out", "fit.svg"]),
    ("plots", ["report", "--model", "13b", "--gpu", "t4", "--out", "plan.html"]),
    ("torch", ["fit", "--model", "13b", "--gpu", "t4", "--simulate"]),
    ("tui", ["tui", "--model", "13b", "--gpu", "t4", "--screenshot", "tui.svg"]),
    ("validate", ["validate", "run", "--smoke", "--only", "nothing-matches"]),
]


@pytest.mark.parametrize("extra,argv", CASES, ids=[" ".join(argv[:2]) for _, argv in CASES])
def test_missing_extra_is_one_line_naming_the_pip_install(extra, argv, tmp_path):
    result = run_without(EXTRA_MODULES[extra], argv, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"pip install 'vramplan[{extra}]'" in lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written when the extra is missing"


def test_validate_list_needs_no_torch(tmp_path):
    result = run_without(EXTRA_MODULES["validate"], ["validate", "run", "--list", "--only", "method=qlora"], tmp_path)
    assert result.returncode == 0, result.stderr
