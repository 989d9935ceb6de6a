"""Speed of the vectorized sweep (configurations per second) and of one solver call.

Targets on the 2-core development machine: at least 1,000,000 configurations/s for a
batch x seq x rank grid (`vramplan.sweep.count_fitting`, the lean path, and `sweep`, which
also builds the row columns), and under 5 ms for one `max_micro_batch` / `max_seq_len` /
`max_lora_rank` call (median of many; the solvers run the scalar, numpy-free path of the model).
Figures only; nothing here asserts a time.

    python benchmarks/solver_speed.py            # full
    python benchmarks/solver_speed.py --quick    # a smoke run (tests use it)
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _median_ms(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny grid and few repeats (smoke test)")
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--gpu", default="a10g")
    args = parser.parse_args(argv)

    from vramplan import solvers
    from vramplan.estimate import make_run
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model
    from vramplan.sweep import count_fitting, sweep

    model, gpu, run = resolve_model(args.model), get_gpu(args.gpu), make_run()
    size = (4, 4, 4) if args.quick else (64, 64, 256)
    repeats = 2 if args.quick else 7
    batch = np.arange(1, size[0] + 1)
    seq = np.arange(1, size[1] + 1) * 128
    rank = np.arange(1, size[2] + 1)
    configurations = batch.size * seq.size * rank.size

    lean_ms = _median_ms(lambda: count_fitting(model, gpu, run, batch, seq, rank), repeats)
    full_ms = _median_ms(lambda: sweep(model, gpu, run, batch=batch, seq=seq, rank=rank, max_cells=configurations), repeats)
    print(f"{model.name} on {gpu.name}, {run.method}: grid {size[0]} batch x {size[1]} seq x {size[2]} rank "
          f"= {configurations:,} configurations")
    print(f"  vectorized verdicts (count_fitting): {lean_ms:8.2f} ms  = {configurations / lean_ms * 1e3:,.0f} configs/s")
    print(f"  full sweep with row columns (sweep): {full_ms:8.2f} ms  = {configurations / full_ms * 1e3:,.0f} configs/s")

    calls = 5 if args.quick else 200
    for name, solve in (("max_micro_batch", solvers.max_micro_batch), ("max_seq_len", solvers.max_seq_len),
                        ("max_lora_rank", solvers.max_lora_rank)):
        answer = solve(model, gpu, run)
        print(f"  {name:16s} -> {answer:>7}: median {_median_ms(lambda: solve(model, gpu, run), calls):.3f} ms "
              f"over {calls} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
