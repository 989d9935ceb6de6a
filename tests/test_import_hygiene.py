"""The fit path stays light: no torch, pandas, matplotlib or textual at start-up."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "triton", "transformers", "pandas", "matplotlib", "textual", "rich", "numpy")

PROBE = """
import sys
from vramplan.cli.main import build_parser, main
build_parser()  # every command registered
code = main(ARGS)
loaded = [name for name in HEAVY if name in sys.modules]
print("LOADED", loaded)
"""


@pytest.mark.parametrize("args", [
    ["fit", "--model", "13b", "--gpu", "t4"],  # the default command: verdict, table and room to spare
    ["fit", "--model", "13b", "--gpu", "t4", "--json"],
    ["fit", "--model", "70b", "--gpu", "t4"],  # does not fit: the advice path
])
def test_fit_imports_no_heavy_library(args):
    probe = PROBE.replace("ARGS", repr(args)).replace("HEAVY", repr(HEAVY))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED []", done.stdout[-300:]


def test_planner_core_never_imports_torch():
    import pathlib

    core = pathlib.Path(__file__).resolve().parents[1] / "vramplan"
    torch_side = {"torch_nf4", "simulate"}
    offenders = []
    for path in core.rglob("*.py"):
        if torch_side & set(path.relative_to(core).parts):
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import torch", "from torch", "import triton", "from triton")) and \
                    not line.startswith((" ", "\t")):
                offenders.append(str(path))
    assert offenders == []
