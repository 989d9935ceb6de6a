"""Builders for hostile inputs: valid model files, then the one thing wrong with each."""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
}
DEEP_JSON = "[" * 10000 + "]" * 10000
HUGE_INT = "9" * 5000
MEMORY_BYTES = 512 * 2**20
INTERPRETER_BASELINE_BYTES = 160 * 2**20  # VmPeak of `vramplan fit` on a catalog model is ~115 MB
TIME_S = 5.0  # CPU seconds
HANG_S = 30.0  # wall seconds: only a hang gets near it


def safetensors_bytes(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def one_tensor(name: str = "w", dtype="F32") -> bytes:
    return safetensors_bytes({name: {"dtype": dtype, "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)


def model_folder(root: Path, config: str | None = None, files: dict[str, bytes] | None = None) -> Path:
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config if config is not None else json.dumps(LLAMA_CONFIG))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    return folder


def _limit_memory() -> None:
    limit = MEMORY_BYTES + INTERPRETER_BASELINE_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str, float]:
    """`vramplan ARGS` in a subprocess under the hostile-input limits: rc, stdout, stderr, seconds.

    Seconds are the child's CPU time, so a loaded 2-core machine does not fail the 5 s budget;
    a hang (a FIFO read blocks without using CPU) is caught by the wall-clock timeout instead.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NO_COLOR="1")
    before = _cpu_seconds_of_children()
    try:
        done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", *args], capture_output=True, text=True,
                              env=env, cwd=cwd, preexec_fn=_limit_memory, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vramplan {' '.join(args)[:200]} still running after {HANG_S} s") from None
    return done.returncode, done.stdout, done.stderr, _cpu_seconds_of_children() - before


def assert_refused(*args: str, cwd: Path | None = None) -> str:
    """The promise: exit 2, at most two stderr lines, no traceback, within 5 s and 512 MB."""
    rc, out, err, seconds = run_cli(*args, cwd=cwd)
    assert "Traceback" not in err + out, err[-2000:]
    assert rc == 2, (rc, out[-500:], err[-500:])
    assert len(err.splitlines()) <= 2, err
    assert err.startswith("error: "), err
    assert "\x1b" not in err + out
    assert seconds < TIME_S, seconds
    return err
