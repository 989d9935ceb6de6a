"""vramplan's per-rank ZeRO plan beside DeepSpeed's own model-state estimators (the README table).

For full fine-tuning with AdamW of a catalog model on one node of N GPUs, prints DeepSpeed 0.19.8's
`estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs` (GPU and CPU
bytes) beside vramplan's model states at the optimizer step (weights + gradients + optimizer
state, plus ZeRO-3's largest-layer term), its whole allocated peak per rank, and its host RAM.

    python benchmarks/deepspeed_comparison.py --model llama-3.1-8b --gpu h100
"""
from __future__ import annotations

import argparse
import logging
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--gpu", default="h100")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from vramplan.distributed.rank_plan import rank_phase_components
    from vramplan.estimate import make_parallel, make_run, plan_ranks
    from vramplan.gpus import get_gpu
    from vramplan.memory.parameters import parameter_count
    from vramplan.resolve import resolve_model

    model, gpu, run = resolve_model(args.model), get_gpu(args.gpu), make_run(method="full")
    params, largest = parameter_count(model), model.vocab_size * model.hidden_size
    for strategy in ("zero2", "zero3"):
        for gpus in (2, 4, 8):
            for offload in ("none", "optimizer"):
                parallel = make_parallel(gpus=gpus, strategy=strategy, offload=offload)
                cluster = plan_ranks(model, gpu, run, parallel=parallel)
                step = rank_phase_components(model, gpu, run, parallel)["optimizer"]
                states = sum(step.get(name, 0) for name in ("float_weights", "gradients", "optimizer_state"))
                if strategy == "zero2":
                    cpu, gpu_bytes = estimate_zero2_model_states_mem_needs(params, gpus, 1, cpu_offload=offload != "none")
                else:
                    cpu, gpu_bytes, largest_memory = estimate_zero3_model_states_mem_needs(
                        params, largest, gpus, 1, cpu_offload=offload != "none", cpu_offload_params=False)
                    states += largest_memory
                label = strategy + (" + offload optimizer" if offload != "none" else "")
                print(f"| {label} | {gpus} | {gpu_bytes / 2**30:.2f} | {states / 2**30:.2f} | "
                      f"{cluster.worst_rank.breakdown.peak_allocated_bytes / 2**30:.2f} | {cpu / 2**30:.2f} | "
                      f"{cluster.host.required_bytes / 2**30:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
