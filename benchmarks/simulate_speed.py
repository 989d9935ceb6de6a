"""Trace-simulator speed per model size: wall time of `vramplan.simulate.simulate` (1 and 2
decoder layers on fake tensors, extrapolated). Target: a 70B config in under 60 s.

    python benchmarks/simulate_speed.py [--seq 512] [--models tinyllama-1.1b llama-3.1-70b]
"""
from __future__ import annotations

import argparse
import time
import warnings

DEFAULT_MODELS = ("tinyllama-1.1b", "llama-3.1-8b", "qwen2.5-32b", "llama-3.1-70b", "qwen2.5-72b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--gpu", default="h100")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    started = time.perf_counter()
    from vramplan.catalog import get_model
    from vramplan.estimate import make_run, plan
    from vramplan.gpus import get_gpu
    from vramplan.simulate import simulate

    print(f"imports (torch, transformers): {time.perf_counter() - started:.1f} s")
    gpu = get_gpu(args.gpu)
    runs = {"qlora": make_run(seq_len=args.seq), "qlora-no-ckpt": make_run(seq_len=args.seq, gradient_checkpointing=False),
            "full": make_run(method="full", seq_len=args.seq), "inference": make_run(method="inference", seq_len=args.seq)}
    print(f"{'model':<16} {'run':<14} {'params':>7} {'seconds':>8} {'simulated GiB':>14} {'analytic GiB':>13}")
    for name in args.models:
        model = get_model(name)
        for label, run in runs.items():
            t0 = time.perf_counter()
            result = simulate(model, gpu, run)
            seconds = time.perf_counter() - t0
            analytic = plan(model, gpu, run).peak_allocated_bytes
            print(f"{name:<16} {label:<14} {plan(model, gpu, run).total_parameters / 1e9:6.1f}B {seconds:8.2f} "
                  f"{result.peak_bytes / 2**30:14.2f} {analytic / 2**30:13.2f}")


if __name__ == "__main__":
    main()
