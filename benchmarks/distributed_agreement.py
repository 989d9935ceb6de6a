"""How closely the analytic per-rank model (`plan_ranks`) follows torch's real FSDP2 on fake tensors.

For every dense catalog model (one per distinct shape: an instruct variant has its base's numbers),
full fine-tuning and LoRA (16-bit base), both with gradient checkpointing, at batch 1 x 1024 tokens
(LoRA rank 16) on an H200 profile, over N = 2, 4 and 8 GPUs with FSDP2 (`fully_shard`, accelerate
1.16's wrapping and mixed precision): the simulated peak of each phase of rank 0 (the worst rank,
`vramplan.simulate.distributed`) beside the worst rank's analytic phase peak; the relative error
(analytic - simulated) / simulated per phase and the largest. Both sides model the same software
stack: this is agreement, not a GPU measurement.

    python benchmarks/distributed_agreement.py                    # about 5-8 minutes on 2 cores
    python benchmarks/distributed_agreement.py --models llama-2-7b,qwen2.5-7b --gpus 2,8
    python benchmarks/distributed_agreement.py --explain           # + category gaps of the worst phase
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor

METHODS = {
    "full": dict(method="full", gradient_checkpointing=True),
    "lora": dict(method="lora", gradient_checkpointing=True),
}
SIZE = dict(micro_batch_size=1, seq_len=1024, lora_rank=16)
PHASES = ("forward", "loss_backward", "layer_backward", "optimizer")
TARGET = 0.03


def point(job: tuple[str, str, int, str]) -> dict:
    """One (model, method, N): simulated and analytic peak per simulated phase, and the categories."""
    from vramplan.catalog import get_model
    from vramplan.distributed.rank_plan import rank_terms
    from vramplan.estimate import make_parallel, make_run, plan_ranks
    from vramplan.memory.terms import total
    from vramplan.gpus import get_gpu
    from vramplan.phases import ANALYTIC_PHASES_OF_SIMULATED
    from vramplan.simulate.distributed import simulate_ranks

    name, method, gpus, wrap = job
    model, gpu, run = get_model(name), get_gpu("h200"), make_run(**METHODS[method], **SIZE)
    parallel = make_parallel(gpus=gpus, strategy="fsdp", fsdp_version=2, fsdp_wrap="decoder-layer")
    started = time.perf_counter()
    simulated = simulate_ranks(model, gpu, run, parallel, wrap_policy=wrap).worst_rank
    seconds = time.perf_counter() - started
    breakdown = plan_ranks(model, gpu, run, parallel=parallel).worst_rank.breakdown
    covering = {phase: [a for a in ANALYTIC_PHASES_OF_SIMULATED[phase] if a in breakdown.phase_peaks] for phase in PHASES}
    chosen = {phase: max(names, key=breakdown.phase_peaks.get) for phase, names in covering.items()}
    terms = rank_terms(model, gpu, run, parallel).phases
    return {"model": name, "method": method, "gpus": gpus, "seconds": seconds,
            "simulated": dict(simulated.phase_peaks),
            "analytic": {phase: breakdown.phase_peaks[a] for phase, a in chosen.items()},
            "simulated_categories": simulated.phase_categories,
            "analytic_categories": {phase: {name: int(total(items)) for name, items in terms[a].items()}
                                    for phase, a in chosen.items()}}


def relative_errors(row: dict) -> dict[str, float]:
    return {phase: (row["analytic"][phase] - row["simulated"][phase]) / row["simulated"][phase] for phase in PHASES}


def distinct_dense_models() -> list[str]:
    """One catalog name per distinct dense architecture (variants repeat their base's numbers)."""
    from vramplan.catalog import list_models

    seen, names = set(), []
    for model in list_models():
        if model.is_moe:
            continue
        shape = tuple(sorted((k, str(v)) for k, v in model.model_dump().items()
                             if k not in ("name", "hf_id", "checkpoint_path", "source", "notes")))
        if shape not in seen:
            seen.add(shape)
            names.append(model.name)
    return names


def explain(row: dict) -> str:
    """Category gaps (analytic - simulated, MiB) on the phase with the largest error. The names differ
    where the two count one thing apart: the analytic gathered_parameters hold the unsharded gradients
    that the simulator calls unsharded_gradients, its comm_buckets the simulator's gradient_reduce."""
    errors = relative_errors(row)
    phase = max(errors, key=lambda p: abs(errors[p]))
    simulated, analytic = row["simulated_categories"][phase], row["analytic_categories"][phase]
    gaps = {n: analytic.get(n, 0) - simulated.get(n, 0) for n in set(simulated) | set(analytic)}
    parts = [f"{n} {g / 2**20:+.1f}" for n, g in sorted(gaps.items(), key=lambda item: -abs(item[1])) if abs(g) >= 2**20]
    return f"    {phase}: " + (", ".join(parts) or "equal") + " MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated catalog names (default: every distinct dense model)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: full, lora")
    parser.add_argument("--gpus", default="2,4,8", help="comma-separated GPU counts N")
    parser.add_argument("--wrap", default="accelerate", choices=("accelerate", "accelerate-peft", "layers-and-root"),
                        help="the simulated FSDP2 units: accelerate 1.16's (default) or every layer and the root")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="print category gaps for points over the target")
    args = parser.parse_args()

    names = args.models.split(",") if args.models else distinct_dense_models()
    methods = args.methods.split(",")
    counts = [int(n) for n in args.gpus.split(",")]
    jobs = [(name, method, n, args.wrap) for name in names for method in methods for n in counts]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(point, jobs))
    print(f"FSDP2 units: {args.wrap}; {len(names)} models x {len(methods)} methods x {len(counts)} GPU counts = {len(rows)} points "
          f"in {time.perf_counter() - start:.0f} s (simulation {sum(r['seconds'] for r in rows):.0f} s)")
    header = f"{'model':<24} {'method':<6} {'N':>2} " + " ".join(f"{p:>14}" for p in PHASES) + f" {'max':>8}"
    print(header)
    for row in rows:
        errors = relative_errors(row)
        worst = max(errors.values(), key=abs)
        print(f"{row['model']:<24} {row['method']:<6} {row['gpus']:>2} "
              + " ".join(f"{errors[p]:>+14.2%}" for p in PHASES) + f" {abs(worst):>8.2%}")
        if args.explain and abs(worst) > TARGET:
            print(explain(row))
    print()
    print(f"{'method':<6} {'N':>2} " + " ".join(f"{p:>14}" for p in PHASES) + f" {'max':>8}  (max |error| over models)")
    for method in methods:
        for n in counts:
            group = [relative_errors(r) for r in rows if r["method"] == method and r["gpus"] == n]
            per_phase = {p: max(abs(e[p]) for e in group) for p in PHASES}
            print(f"{method:<6} {n:>2} " + " ".join(f"{per_phase[p]:>14.2%}" for p in PHASES)
                  + f" {max(per_phase.values()):>8.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
