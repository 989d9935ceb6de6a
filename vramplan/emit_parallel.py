"""`fit --emit accelerate|deepspeed`: the multi-GPU recipes of a plan, given its ParallelConfig.

accelerate: the accelerate config and its launch lines; under ZeRO also the DeepSpeed JSON the
config names, as two blocks headed `==> FILE <==` (each ready to save as that file).
deepspeed: the DeepSpeed JSON alone (ZeRO strategies only).
"""
from __future__ import annotations

from vramplan.emit_accelerate import CONFIG_FILE, DEEPSPEED_CONFIG_FILE, accelerate_config
from vramplan.emit_deepspeed import deepspeed_json, require_zero
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.parallel import ZERO_STRATEGIES, ParallelConfig


def file_block(name: str, text: str) -> str:
    """One labelled block of a multi-file answer (the `head` convention)."""
    return f"==> {name} <==\n{text}"


def emit_parallel(target: str, model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig | None,
                  breakdown: Breakdown) -> str:
    """The `--emit target` text for the plan; `parallel` None is one GPU."""
    parallel = parallel or ParallelConfig()
    if target == "deepspeed":
        require_zero(parallel)
        return deepspeed_json(model, gpu, run, parallel, breakdown)
    if target != "accelerate":
        raise ValueError(f"emit_parallel: unknown target {target!r} (accelerate or deepspeed)")
    config = accelerate_config(model, gpu, run, parallel, breakdown)
    if parallel.resolved_strategy not in ZERO_STRATEGIES:
        return config
    return file_block(CONFIG_FILE, config) + "\n" + file_block(
        DEEPSPEED_CONFIG_FILE, deepspeed_json(model, gpu, run, parallel, breakdown))


__all__ = ["emit_parallel", "file_block"]
