"""Cold-start wall time of the default `vramplan fit --model 13b --gpu t4` and of `vramplan serve --engine vllm
--model mistral-7b --format awq-4bit --gpu l4 --max-model-len 32768` and `vramplan serve --engine llama.cpp
--model llama-3.1-70b --format gguf-q4_k_m --gpu 4090 --host-ram 64GiB` (target: median <= 0.3 s), and of the
multi-GPU `vramplan fit --model llama-3.1-70b --gpu a100-40g --gpus 4 --strategy fsdp --method lora` with its
per-rank and host tables (target: median < 0.5 s).

The default command prints the verdict, the table and "room to spare" (three solver calls);
`--json` skips the solvers and is timed beside it. Runs the installed console script (or
`python -m vramplan.cli.main` with --module) in a fresh process each time and prints median /
p90 / min of each, plus which heavy libraries each path loaded (there should be none).

    python benchmarks/cold_start.py --runs 20
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "pandas", "matplotlib", "textual", "numpy")
SERVE_VLLM = ["serve", "--engine", "vllm", "--model", "mistral-7b", "--format", "awq-4bit", "--gpu", "l4",
              "--max-model-len", "32768"]
SERVE_LLAMACPP = ["serve", "--engine", "llama.cpp", "--model", "llama-3.1-70b", "--format", "gguf-q4_k_m",
                  "--gpu", "4090", "--host-ram", "64GiB"]
FIT_FSDP = ["fit", "--model", "llama-3.1-70b", "--gpu", "a100-40g", "--gpus", "4", "--strategy", "fsdp", "--method", "lora"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--module", action="store_true", help="time `python -m vramplan.cli.main` instead")
    args = parser.parse_args()
    script = shutil.which("vramplan")
    base = ([sys.executable, "-m", "vramplan.cli.main"] if args.module or not script else [script])
    for words in (["fit", "--model", "13b", "--gpu", "t4"], ["fit", "--model", "13b", "--gpu", "t4", "--json"],
                  SERVE_VLLM, SERVE_LLAMACPP, FIT_FSDP):
        command = base + words
        subprocess.run(command, capture_output=True)  # warm the file cache once
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True)
            times.append(time.perf_counter() - start)
            if done.returncode not in (0, 1):
                print(done.stderr.decode(), file=sys.stderr)
                return 2
        times.sort()
        probe = subprocess.run(
            [sys.executable, "-c", f"import sys; from vramplan.cli.main import main; main({words!r}); "
             f"print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)"],
            capture_output=True, text=True)
        print(f"command: {' '.join(command)}")
        print(f"  runs: {args.runs}  median: {statistics.median(times):.3f} s  "
              f"p90: {times[int(0.9 * (len(times) - 1))]:.3f} s  min: {times[0]:.3f} s  (target: median <= {0.5 if words is FIT_FSDP else 0.3:.3f} s)")
        print(f"  heavy modules loaded: {probe.stderr.strip().splitlines()[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
