"""The plan as a DeepSpeed config JSON (`vramplan fit --emit deepspeed`, and `ds_config.json` of `--emit accelerate`).

Keys from deepspeed 0.19.8 (committed in vramplan/emit_fields/deepspeed.json): runtime/zero/config.py
`DeepSpeedZeroConfig` and runtime/zero/offload_config.py forbid unknown keys; runtime/config.py
`DeepSpeedConfig` reads top-level keys by name and ignores the others (it refuses only the removed
ones), so the plan's note goes in a top-level "_comment". Every size the plan's memory depends on
is written as the number the plan assumed, not "auto": "auto" sizes are the ones transformers
would fill in (integrations/deepspeed.py `HfTrainerDeepSpeedConfig`: hidden^2, 0.9 hidden^2,
10 hidden; `vramplan.specs.parallel.auto_bucket_sizes`), and a number that disagrees with
TrainingArguments (micro batch, accumulation, bf16/fp16) makes transformers and accelerate raise
instead of training another run. Only gradient clipping and the optimizer's hyperparameters, which
no memory depends on, stay "auto" for the Trainer to fill.
- ZeRO-Offload with an optimizer the script builds raises unless zero_force_ds_cpu_optimizer is
  false (runtime/engine.py `_configure_basic_optimizer`), so an offloaded AdamW plan names DeepSpeed's
  AdamW (its DeepSpeedCPUAdam: fp32 moments on the host).
- Pure bf16 full fine-tuning (no fp32 master copy) is bf16 with bf16_master_weights_and_grads and
  bf16_optimizer_states (runtime/precision_config.py, ZeRO stages 1-3).
"""
from __future__ import annotations

import json

from vramplan.emit_common import header_lines, mixed_precision, require_training
from vramplan.errors import InputError
from vramplan.optimizers import get_optimizer
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.parallel import ZERO_STRATEGIES, ParallelConfig, resolved_bucket, resolved_overlap_comm

TARGET_VERSIONS = "deepspeed 0.19.8, accelerate 1.16.0, transformers 5.24"
NVME_PATH_PLACEHOLDER = "/local_nvme"
TORCH_ADAMW = "torch.optim.AdamW"


def require_zero(parallel: ParallelConfig) -> int:
    """The plan's ZeRO stage; any other strategy is an InputError."""
    strategy = parallel.resolved_strategy
    if strategy not in ZERO_STRATEGIES:
        raise InputError("--emit", f"emit deepspeed: the plan's strategy is {strategy}; "
                                   "pass --strategy zero1, zero2 or zero3")
    return int(strategy.removeprefix("zero"))


def _offload(device: str, on: bool) -> dict:
    if not on:
        return {"device": "none"}
    return {"device": device, "pin_memory": True} | ({"nvme_path": NVME_PATH_PLACEHOLDER} if device == "nvme" else {})


def zero_optimization(model: ModelSpec, parallel: ParallelConfig) -> dict:
    """zero_optimization with the stage, offload and every bucket size the plan counted."""
    stage = require_zero(parallel)
    section: dict = {"stage": stage,
                     "offload_optimizer": _offload(parallel.offload_device, parallel.offload != "none")}
    if stage == 3:
        section["offload_param"] = _offload(parallel.offload_device, parallel.offload == "params")
    section |= {"overlap_comm": resolved_overlap_comm(parallel), "contiguous_gradients": True,
                "reduce_bucket_size": resolved_bucket(parallel, "reduce_bucket_size", model.hidden_size)}
    if stage < 3:
        section["allgather_bucket_size"] = parallel.allgather_bucket_size
    else:
        section |= {name: resolved_bucket(parallel, name, model.hidden_size)
                    for name in ("stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")}
        section |= {"stage3_max_live_parameters": parallel.stage3_max_live_parameters,
                    "stage3_gather_16bit_weights_on_model_save": True}
    return section


def precision(run: RunConfig, breakdown: Breakdown) -> dict:
    """bf16 / fp16 sections: the plan's autocast dtype; pure 16-bit full fine-tuning keeps no fp32 master copy."""
    mixed = mixed_precision(run, breakdown)
    pure = run.method == "full" and run.full_precision != "mixed" and breakdown.compute_dtype in ("bf16", "fp16")
    dtype = breakdown.compute_dtype if pure else mixed
    bf16: dict = {"enabled": dtype == "bf16"}
    if pure and dtype == "bf16":
        bf16 |= {"bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}
    return {"bf16": bf16, "fp16": {"enabled": dtype == "fp16"}}


def optimizer_entries(run: RunConfig, parallel: ParallelConfig) -> tuple[dict, list[str]]:
    """Top-level optimizer keys ZeRO-Offload needs, and notes: none when nothing is offloaded
    (DeepSpeed wraps the Trainer's optimizer as planned)."""
    if parallel.offload == "none":
        return {}, []
    entry = get_optimizer(run.optimizer)
    if entry.library_class == TORCH_ADAMW and not entry.eight_bit and not entry.paged:
        params = dict.fromkeys(("lr", "betas", "eps", "weight_decay"), "auto")
        return {"optimizer": {"type": "AdamW", "params": params}}, [
            "ZeRO-Offload steps DeepSpeedCPUAdam (AdamW, fp32 moments on the host)"]
    return {"zero_force_ds_cpu_optimizer": False}, [
        f"ZeRO-Offload steps the Trainer's {entry.hf_optim} on the offloaded partitions (DeepSpeed's own CPU "
        "optimizers are Adam/AdamW and Lion: plan with --optimizer adamw for DeepSpeedCPUAdam)"]


def tensor_parallel(parallel: ParallelConfig) -> dict:
    """DeepSpeed AutoTP training (runtime/tensor_parallel/config.py TPTrainingConfig.autotp_size; accelerate
    1.16's accelerator.py builds the tp mesh from it) when the plan splits layers over T GPUs."""
    return {"tensor_parallel": {"autotp_size": parallel.tensor_parallel}} if parallel.tensor_parallel > 1 else {}


def deepspeed_config(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig,
                     breakdown: Breakdown) -> dict:
    """The DeepSpeed config as a dict (see `deepspeed_json`)."""
    require_training("deepspeed", run)
    zero = zero_optimization(model, parallel)
    optimizer, optimizer_notes = optimizer_entries(run, parallel)
    notes = [*header_lines(model, gpu, run, breakdown, TARGET_VERSIONS),
             "sizes are the numbers the plan assumed (transformers' 'auto' would give the same for the defaults); "
             "TrainingArguments must say the same micro batch, accumulation and bf16/fp16, or transformers raises",
             f"DeepSpeed derives train_batch_size = micro batch x accumulation x {parallel.data_parallel} "
             "data-parallel ranks", *optimizer_notes]
    if parallel.offload_device == "nvme":
        notes.append(f"set nvme_path ({NVME_PATH_PLACEHOLDER}) to a local NVMe mount on every machine")
    sixteen_bit = precision(run, breakdown)
    if sixteen_bit["bf16"].get("bf16_master_weights_and_grads"):
        notes.append("pure bf16 as planned: no fp32 master weights, bf16 optimizer state; TrainingArguments(bf16=True)")
    elif run.method == "full" and run.full_precision == "mixed" and (sixteen_bit["bf16"]["enabled"]
                                                                     or sixteen_bit["fp16"]["enabled"]):
        notes.append("DeepSpeed's 16-bit mode casts the model's parameters to the compute dtype and keeps the fp32 "
                     "master weights in the ZeRO partitions (no fp32 model under autocast)")
    elif sixteen_bit["fp16"]["enabled"] and run.method == "full" and run.full_precision != "mixed":
        notes.append("DeepSpeed fp16 keeps fp32 master weights in the ZeRO optimizer, which this pure-fp16 plan "
                     "did not count (fp16_master_weights_and_grads needs ZeRO-Offload with DeepSpeedCPUAdam)")
    return {"_comment": "; ".join(notes), **sixteen_bit,
            "train_micro_batch_size_per_gpu": run.micro_batch_size,
            "gradient_accumulation_steps": run.grad_accum_steps, "gradient_clipping": "auto",
            **optimizer, **tensor_parallel(parallel), "zero_optimization": zero}


def deepspeed_json(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig,
                   breakdown: Breakdown) -> str:
    """A DeepSpeed config JSON (ZeRO stage 1/2/3) with the plan's precision, batch, offload and sizes."""
    return json.dumps(deepspeed_config(model, gpu, run, parallel, breakdown), indent=2) + "\n"


__all__ = ["TARGET_VERSIONS", "deepspeed_config", "deepspeed_json", "optimizer_entries", "precision",
           "require_zero", "tensor_parallel", "zero_optimization"]
