"""How closely the analytic model follows the trace simulator over the catalog.

For every dense catalog model, five methods (QLoRA with and without checkpointing, LoRA,
full fine-tuning, inference) at two sizes (batch 1 x 512 tokens x rank 16 and batch 2 x
1024 x rank 64) on an H200 profile: the relative gap |analytic - simulated| / simulated on
the phase where the simulator peaks, and the largest gap over all phases. Prints median
and max per method. Both engines model the same software stack: this is agreement, not a
GPU measurement (see validation/ for those).

    python benchmarks/simulator_agreement.py            # about 2-4 minutes on 2 cores
    python benchmarks/simulator_agreement.py --models llama-2-7b,gemma-2-2b
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

METHODS = {
    "qlora-gc": dict(method="qlora", gradient_checkpointing=True),
    "qlora": dict(method="qlora", gradient_checkpointing=False),
    "lora": dict(method="lora", gradient_checkpointing=True),
    "full": dict(method="full", gradient_checkpointing=True),
    "inference": dict(method="inference", max_new_tokens=64),
}
SIZES = (dict(micro_batch_size=1, seq_len=512, lora_rank=16), dict(micro_batch_size=2, seq_len=1024, lora_rank=64))


def gaps(job: tuple[str, str, int]) -> tuple[str, float, float]:
    """(method, gap on the simulated peak phase, largest gap over all phases) for one point."""
    from vramplan.catalog import get_model
    from vramplan.estimate import make_run
    from vramplan.gpus import get_gpu
    from vramplan.simulate import compare, simulate

    name, method, size = job
    model, gpu, run = get_model(name), get_gpu("h200"), make_run(**METHODS[method], **SIZES[size])
    result = simulate(model, gpu, run)
    phases = compare(model, gpu, run, result)
    peak = next(p for p in phases if p.phase == result.peak_phase)
    return method, abs(peak.relative_gap), max(abs(p.relative_gap) for p in phases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated catalog names (default: every dense model)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from vramplan.catalog import list_models

    names = args.models.split(",") if args.models else [m.name for m in list_models() if not m.is_moe]
    jobs = [(name, method, size) for name in names for method in METHODS for size in range(len(SIZES))]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(gaps, jobs))
    print(f"{len(names)} models x {len(METHODS)} methods x {len(SIZES)} sizes = {len(rows)} points "
          f"in {time.perf_counter() - start:.0f} s")
    print(f"{'method':<10} {'peak phase: median':>19} {'max':>8} {'any phase: max':>15}")
    for method in METHODS:
        peak = [row[1] for row in rows if row[0] == method]
        every = [row[2] for row in rows if row[0] == method]
        print(f"{method:<10} {statistics.median(peak):>18.3%} {max(peak):>8.3%} {max(every):>15.3%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
