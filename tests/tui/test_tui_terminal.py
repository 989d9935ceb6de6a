"""The explorer in a real terminal (tmux): typed keys land where the user put them, and the
fields and the plan agree. Pilot hands keys over one at a time; a terminal does not."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from vramplan.cli.main import build_parser
from vramplan.cli.run_flags import run_config_from_args

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (the real-terminal test drives the app in it)")
ROOT = Path(__file__).resolve().parents[2]


class Terminal:
    """The app in a detached tmux session on a socket of its own (tests never collide)."""

    def __init__(self, args: str, size=(140, 44)) -> None:
        self.socket = f"vramplan-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        command = f"env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)} -m vramplan.cli.main tui {args}"
        self.tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), command)

    def tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, *args],
                              capture_output=True, text=True, check=False).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "0")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        pytest.fail(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def keys(self, *keys: str, gap: float = 0.0) -> None:
        """tmux key names (Tab, BTab, BSpace) or characters; all at once when gap is 0."""
        if gap == 0:
            self.tmux("send-keys", "-t", "0", *keys)
            return
        for key in keys:
            self.tmux("send-keys", "-t", "0", key)
            time.sleep(gap)

    def close(self) -> None:
        self.tmux("kill-server")


def knob(screen: str, label: str) -> str:
    match = re.search(rf"^\W*{re.escape(label)} +(\S*)", screen, re.M)
    assert match, f"no {label!r} knob on screen:\n{screen}"
    return match.group(1)


def planned(screen: str):
    """The RunConfig of the `vramplan fit ...` line the explorer shows for its plan."""
    line = next(line for line in screen.splitlines() if "$ vramplan fit" in line)
    words = shlex.split(line[line.index("$ vramplan") + 2:].rstrip(" ▕│"))
    return run_config_from_args(build_parser().parse_args(words[1:]))


def settled(term: Terminal, expected: str) -> str:
    screen = term.wait_for(expected)
    time.sleep(1.0)  # let any late key show itself
    return term.screen()


def test_typing_at_eight_keys_a_second_and_in_bursts_keeps_every_key_where_it_was_typed():
    term = Terminal("--model llama-3.1-8b --gpu rtx4090")
    try:
        term.wait_for("largest that fits: micro-batch")
        # Focus starts on the model; seq len is the 15th knob. The 0.12 s per key:
        term.keys(*["Tab"] * 14, "2", "0", "4", "8", gap=0.12)
        screen = settled(term, "--seq 2048")
        assert (knob(screen, "seq len"), knob(screen, "grad accum"), knob(screen, "micro-batch")) == ("2048", "1", "1")
        assert planned(screen).seq_len == 2048 and "error" not in screen.lower()
        # A burst (keys faster than the app draws): back to grad accum, 3, Backspace, 4, on to seq len.
        term.keys("BTab", "3", "BSpace", "4", "Tab", "4", "0", "9", "6")
        screen = settled(term, "--seq 4096")
        run = planned(screen)
        assert (knob(screen, "grad accum"), knob(screen, "seq len")) == ("4", "4096")
        assert (run.grad_accum_steps, run.seq_len, run.micro_batch_size) == (4, 4096, 1)
        # A blanked micro-batch is put back when the user leaves it: field and plan agree.
        term.keys("BTab", "BTab", "BSpace", gap=0.12)
        term.wait_for("must be a whole number")
        term.keys("Tab", gap=0.12)
        screen = settled(term, "--seq 4096")
        assert knob(screen, "micro-batch") == "1" and planned(screen).micro_batch_size == 1
        assert "must be a whole number" not in screen
    finally:
        term.close()
