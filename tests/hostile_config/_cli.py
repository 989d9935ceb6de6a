"""Run the CLI as a user would, in a subprocess, and check the promise on bad input."""
from __future__ import annotations

import os
import subprocess
import sys

SECONDS = 5


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`vramplan ARGS` with this checkout's PYTHONPATH, killed after SECONDS (a hang fails the test)."""
    return subprocess.run([sys.executable, "-m", "vramplan.cli.main", *args], capture_output=True, text=True,
                          timeout=SECONDS, env=dict(os.environ), cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit 2, at most two stderr lines, no traceback, and the message names what it should."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, lines
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
