"""DeepSpeed ZeRO's model states on one rank: 16-bit parameters and gradients, fp32 master
weights, fp32 gradient partitions and the optimizer's state on the master weights.

DeepSpeed casts the whole module to the 16-bit compute dtype (runtime/engine.py
`_configure_distributed_model`: `self.module.bfloat16()` / `.half()`), and its ZeRO optimizer
keeps an fp32 master copy of the trainable parameters' partition with the optimizer state on it.
Bytes per trainable parameter, N = ranks (deepspeed/runtime/zero/stage_1_and_2.py and stage3.py
`estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs`, 0.19.8:
"18 = 2_grads_16bit + 4_grads_32bit + 4_params_32bit + 8_optimizer_states_32bit"):

| stage | 16-bit params | 16-bit grads | fp32 grads | fp32 master | optimizer state (AdamW: 8) |
|-------|---------------|--------------|------------|-------------|----------------------------|
| 1     | 2             | 2            | 4/N        | 4/N         | 8/N                        |
| 2     | 2             | 2/N          | 4/N        | 4/N         | 8/N                        |
| 3     | 2/N           | 2/N          | 4/N        | 4/N         | 8/N                        |

Frozen parameters (LoRA's base) are 16-bit (or quantized) and get no master copy, gradient or
state; ZeRO-3 partitions them too. The fp32 gradients exist for the step only
(stage_1_and_2.py `single_partition_of_fp32_groups[i].grad`; stage3.py
`_prepare_fp32_grad_for_sub_group`, one sub group of at most sub_group_size = 1e9 elements at a
time). ZeRO-3 accumulates gradients in a partition buffer of the gradient-accumulation dtype,
allocated with `torch.zeros` when the optimizer is built (stage3.py:791), which defaults to the
model's 16-bit dtype (engine.py `get_data_types`). DeepSpeed's estimator counts 18 bytes per
parameter at stage 3 and leaves that 16-bit partition out; vramplan counts it (20/N at the step). Other optimizers keep their own state on the fp32 partition
(`vramplan.optimizers`). Offloading the optimizer (ZeRO-Offload) moves the fp32 master, fp32
gradients and state to the host, and ZeRO-2's 16-bit gradient partition with them; offloading
the parameters (ZeRO-3 only) moves the 16-bit partition too.
"""
from __future__ import annotations

from vramplan.distributed.shares import PARAMETER_COMPONENTS, sharded_terms
from vramplan.memory import optimizer, weights
from vramplan.memory.dtypes import DTYPE_BYTES
from vramplan.memory.terms import term
from vramplan.specs.parallel import ParallelConfig

SOURCE = "deepspeed/runtime/zero/stage_1_and_2.py, stage3.py (0.19.8)"
MASTER_BYTES = 4
SUB_GROUP_SIZE = 1_000_000_000  # runtime/zero/config.py sub_group_size


def rank_model_state_terms(phases: dict, trainable_groups, run, parallel: ParallelConfig,
                           persistent_split, compute_dtype: str) -> tuple[dict, dict]:
    """(GPU terms {phase: {component: [Term]}}, host terms {component: [Term]} of ONE rank) for a
    ZeRO stage, from the single-GPU terms planned in DeepSpeed's 16-bit precision (`phases`).

    `persistent_split(items)` -> (whole, partitioned) splits ZeRO-3 parameter terms by
    stage3_param_persistence_threshold."""
    stage = int(parallel.resolved_strategy[-1])
    n = parallel.shard_count
    offload_optimizer = parallel.offload in ("optimizer", "params")
    offload_params = parallel.offload == "params"
    master = weights.tensor_group_terms(trainable_groups, MASTER_BYTES, "fp32")
    master = [item._replace(name=f"fp32 master {item.name}") for item in master]
    state = optimizer.optimizer_state_terms(run.optimizer, trainable_groups, MASTER_BYTES)
    fp32_grads = [item._replace(name=f"fp32 gradient {item.name}") for item in
                  weights.tensor_group_terms(trainable_groups, 4, "fp32")]
    step_temp = optimizer.optimizer_step_temp_terms(run.optimizer, trainable_groups, MASTER_BYTES)
    state_part = sharded_terms(master + state, n, SOURCE)
    fp32_grads_part = sharded_terms(fp32_grads, n, SOURCE)
    if stage == 3:
        trainable = sum(g.numel * g.count for g in trainable_groups)
        per_rank = -(-trainable // n)
        fp32_grads_part = [term("fp32 gradients of one sub group at the step", "min(elements / N, sub_group_size) x fp32",
                                (("elements", min(per_rank, SUB_GROUP_SIZE)), ("B", 4)), SOURCE)] if trainable else []
        grads16 = weights.tensor_group_terms(trainable_groups, DTYPE_BYTES[compute_dtype], compute_dtype)
        grad_partition = sharded_terms([item._replace(name=f"gradient partition {item.name}") for item in grads16], n,
                                       SOURCE)
    step_part = sharded_terms(step_temp, n, SOURCE)

    host = {"offloaded_optimizer_state": state_part + fp32_grads_part if offload_optimizer else [],
            "offloaded_parameters": []}
    if offload_optimizer and stage == 3:
        host["offloaded_optimizer_state"] += grad_partition  # pinned when the optimizer is offloaded (stage3.py:794)
    out = {}
    for phase, comps in phases.items():
        comps = dict(comps)
        for name in PARAMETER_COMPONENTS:
            if name in comps and stage == 3:
                whole, partitioned = persistent_split(comps[name])
                part = sharded_terms(partitioned, n, SOURCE)
                if offload_params:
                    if phase == "optimizer":  # the same partition in every phase: count it once
                        host["offloaded_parameters"] += part
                    part = []
                comps[name] = whole + part
        grads16 = comps.get("gradients", [])
        if stage == 1:
            grads = list(grads16)
        elif stage == 2:
            grads = [] if offload_optimizer else sharded_terms(grads16, n, SOURCE)
        else:
            grads = [] if offload_optimizer else list(grad_partition)
        if phase == "optimizer" and not offload_optimizer:
            grads = grads + fp32_grads_part
        comps["gradients"] = grads
        comps["optimizer_state"] = [] if offload_optimizer else state_part
        if "optimizer_step_temp" in comps:
            comps["optimizer_step_temp"] = [] if offload_optimizer else step_part
        out[phase] = comps
    return out, host


def buffer_factor_term(nbytes: int, what: str):
    """DeepSpeed's host estimate multiplies its host bytes by additional_buffer_factor 1.5
    (estimate_zero2/3_model_states_mem_needs, 'additional_buffer_factor=1.5')."""
    return term(f"{what} x DeepSpeed's additional_buffer_factor", "B x 1.5", (("B", nbytes), ("factor", 1.5)),
                SOURCE, rounding="floor")


__all__ = ["MASTER_BYTES", "SOURCE", "buffer_factor_term", "rank_model_state_terms"]
