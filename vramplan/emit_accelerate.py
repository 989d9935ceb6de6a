"""The plan as an accelerate config YAML and its launch lines (`vramplan fit --emit accelerate`).

Keys from accelerate 1.16.0 (committed in vramplan/emit_fields/accelerate.json): the file is
commands/config/config_args.py `ClusterConfig` (`from_yaml_file` refuses unknown top-level keys);
commands/launch.py `_validate_launch_command` copies each fsdp_config / deepspeed_config /
parallelism_config key onto the launch argument of that name, and utils/launch.py
(`prepare_multi_gpu_env`, `prepare_deepspeed_cmd_env`) exports them as the variables that
utils/dataclasses.py `FullyShardedDataParallelPlugin` / `DeepSpeedPlugin` read in every process.
Behaviour the config follows from that source:
- FSDP1 takes its strategy from `fsdp_sharding_strategy`: the launcher always exports
  FSDP_SHARDING_STRATEGY (default FULL_SHARD) and the plugin prefers it to `fsdp_reshard_after_forward`.
  FSDP2 takes a bool `fsdp_reshard_after_forward`, has no backward prefetch, use_orig_params or
  sync_module_states, and refuses forward prefetch; its hybrid sharding and tensor parallelism are
  `parallelism_config` (dp_replicate x dp_shard x tp = processes).
- Under FSDP1 `fsdp_cpu_ram_efficient_loading` needs `fsdp_sync_module_states` (the launcher raises).
- `limit_all_gathers` has no launch argument: the plugin's default (True) always applies.
- Beside `deepspeed_config_file` accelerate refuses `mixed_precision` and the ZeRO keys
  (`DeepSpeedPlugin._deepspeed_config_checks`): precision and ZeRO live in the JSON.
transformers 5.24's Trainer wraps each trainable LoRA layer in its own FSDP unit for a peft model
(distributed/fsdp.py `update_fsdp_plugin_peft`, peft's `fsdp_auto_wrap_policy`).
"""
from __future__ import annotations

from vramplan.emit_common import header_lines, mixed_precision, require_training, yaml_lines
from vramplan.families import get_family
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.parallel import FSDP_STRATEGIES, ZERO_STRATEGIES, ParallelConfig, resolved_fsdp_wrap

TARGET_VERSIONS = "accelerate 1.16.0, transformers 5.24"
CONFIG_FILE = "accelerate.yaml"
DEEPSPEED_CONFIG_FILE = "ds_config.json"
TRAIN_SCRIPT = "train.py"
MAIN_PROCESS_PORT = 29500  # utils/launch.py prepare_multi_gpu_env's default port
MAIN_HOST_PLACEHOLDER = "MAIN_MACHINE_IP"

DISTRIBUTED_TYPES = {"single": "NO", "ddp": "MULTI_GPU", **dict.fromkeys(FSDP_STRATEGIES, "FSDP"),
                     **dict.fromkeys(ZERO_STRATEGIES, "DEEPSPEED")}
# FSDP1 ShardingStrategy names (accelerate utils/constants.py FSDP_SHARDING_STRATEGY)
FSDP1_SHARDING = {"fsdp": "FULL_SHARD", "fsdp-grad-op": "SHARD_GRAD_OP", "fsdp-hybrid": "HYBRID_SHARD"}
QLORA_STORAGE = ("QLoRA: load with BitsAndBytesConfig(bnb_4bit_quant_storage=<the compute dtype>) so {wrapper} "
                 "can shard the 4-bit weights with the rest")
# fsdp_config key -> the variable utils/launch.py prepare_multi_gpu_env exports it as
FSDP_ENV_NAMES = {"fsdp_transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP"}


def decoder_layer_class(model: ModelSpec) -> str:
    """The transformers decoder-layer class of the model's family: the config class's prefix +
    "DecoderLayer" (LlamaConfig -> LlamaDecoderLayer, Gemma3TextConfig -> Gemma3DecoderLayer), which is
    each family's `_no_split_modules` in transformers 5.24 (tests check it)."""
    prefix = get_family(model.architecture).config_class.removesuffix("Config").removesuffix("Text")
    return prefix + "DecoderLayer"


def describe_parallel(parallel: ParallelConfig) -> str:
    """One line: how many GPUs on how many machines, the strategy and what is offloaded."""
    strategy = parallel.resolved_strategy
    if parallel.is_single:
        return "parallel plan: one GPU (single)"
    offload = "" if parallel.offload == "none" else f", offload {parallel.offload} to {parallel.offload_device}"
    tensor = f", tensor parallel {parallel.tensor_parallel}" if parallel.tensor_parallel > 1 else ""
    fsdp = f" (FSDP{parallel.fsdp_version})" if strategy in FSDP_STRATEGIES else ""
    machines = "on one machine" if parallel.nodes == 1 else f"({parallel.gpus} per machine x {parallel.nodes} machines)"
    return f"parallel plan: {parallel.world_size} GPUs {machines}, {strategy}{fsdp}{offload}{tensor}"


def _machine_entries(parallel: ParallelConfig) -> list:
    entries = [("num_machines", parallel.nodes),
               ("num_processes", parallel.world_size, "all machines together: GPUs per machine x machines"),
               ("machine_rank", 0, "0 on the main machine, 1 .. num_machines-1 on the others"
                if parallel.nodes > 1 else None)]
    if parallel.nodes > 1:
        entries += [("main_process_ip", MAIN_HOST_PLACEHOLDER, "replace with the main machine's address"),
                    ("main_process_port", MAIN_PROCESS_PORT)]
    return entries if parallel.is_single else entries + [("rdzv_backend", "static")]


def fsdp_section(model: ModelSpec, run: RunConfig, parallel: ParallelConfig) -> dict:
    """fsdp_config: the plan's FSDP version, sharding, offload, wrapping, prefetch and loading."""
    strategy, version = parallel.resolved_strategy, parallel.fsdp_version
    section: dict = {"fsdp_version": version}
    if version == 1:
        section["fsdp_sharding_strategy"] = FSDP1_SHARDING[strategy]
    else:
        section["fsdp_reshard_after_forward"] = strategy != "fsdp-grad-op"
    section |= {"fsdp_offload_params": parallel.offload == "params",
                "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "fsdp_transformer_layer_cls_to_wrap": decoder_layer_class(model)}
    if version == 1:
        section["fsdp_backward_prefetch"] = "BACKWARD_PRE" if parallel.backward_prefetch else "NO_PREFETCH"
    section["fsdp_state_dict_type"] = "SHARDED_STATE_DICT"
    if version == 1:
        section |= {"fsdp_forward_prefetch": parallel.forward_prefetch,
                    # peft's examples/sft/configs/fsdp_config*.yaml: false for adapters (each LoRA layer its own unit)
                    "fsdp_use_orig_params": not run.uses_lora}
    section["fsdp_cpu_ram_efficient_loading"] = parallel.cpu_ram_efficient_loading
    if version == 1:
        section["fsdp_sync_module_states"] = parallel.cpu_ram_efficient_loading
    section["fsdp_activation_checkpointing"] = False
    return section


def _fsdp_comments(model: ModelSpec, run: RunConfig, parallel: ParallelConfig) -> list[str]:
    checkpointing = ("the plan's gradient checkpointing is transformers' own (TrainingArguments "
                     "gradient_checkpointing=True), so fsdp_activation_checkpointing stays false"
                     if run.gradient_checkpointing else "the plan has no activation checkpointing")
    comments = [checkpointing,
                "SHARDED_STATE_DICT: each rank saves its shard (FULL_STATE_DICT gathers the model on rank 0's CPU)"]
    if " read as " in model.source:
        comments.append(f"this checkpoint's model_type was read as {model.architecture}: set "
                        "fsdp_transformer_layer_cls_to_wrap to its own decoder layer class (its _no_split_modules)")
    if run.uses_lora:
        lora_units = resolved_fsdp_wrap(parallel, run) == "decoder-layer+lora"
        comments.append("transformers' Trainer wraps each LoRA layer in its own FSDP unit for a peft model"
                        + (", as planned" if lora_units else
                           "; the plan counted decoder-layer units only (plan with fsdp_wrap decoder-layer+lora)"))
    if run.method == "qlora":
        comments.append(QLORA_STORAGE.format(wrapper="FSDP"))
    if parallel.fsdp_version == 1 and not parallel.limit_all_gathers:
        comments.append("limit_all_gathers=False is no accelerate config key: pass "
                        "FullyShardedDataParallelPlugin(limit_all_gathers=False) to the Accelerator")
    if parallel.fsdp_version == 2 and parallel.tensor_parallel > 1:
        comments.append(f"tensor parallel {parallel.tensor_parallel}: load the model with from_pretrained(..., "
                        "tp_plan='auto') (accelerate's prepare_model raises on a model not split yet)")
    if parallel.fsdp_version == 2 and parallel.forward_prefetch:
        comments.append("accelerate 1.16 does not implement forward prefetch under FSDP2: the run will not prefetch")
    return comments


def parallelism_section(parallel: ParallelConfig) -> dict:
    """parallelism_config for FSDP2 when it has to say more than "shard over all": hybrid sharding
    (replicate over machines, shard within one) or tensor parallelism."""
    if parallel.fsdp_version != 2 or parallel.resolved_strategy not in FSDP_STRATEGIES:
        return {}
    hybrid = parallel.resolved_strategy == "fsdp-hybrid"
    if not hybrid and parallel.tensor_parallel == 1:
        return {}
    prefix = "parallelism_config_"
    return {prefix + "dp_replicate_size": parallel.nodes if hybrid else 1,
            prefix + "dp_shard_size": parallel.shard_count,
            prefix + "tp_size": parallel.tensor_parallel}


def deepspeed_section(parallel: ParallelConfig) -> dict:
    """deepspeed_config: the JSON file, zero.Init for ZeRO-3, and the torchrun-style launcher across machines."""
    section = {"deepspeed_config_file": DEEPSPEED_CONFIG_FILE,
               "zero3_init_flag": parallel.resolved_strategy == "zero3" and parallel.cpu_ram_efficient_loading}
    if parallel.nodes > 1:
        section["deepspeed_multinode_launcher"] = "standard"
    return section


def _precision(run: RunConfig, breakdown: Breakdown) -> str:
    return mixed_precision(run, breakdown) or "no"


def _unexpressed(parallel: ParallelConfig) -> list[str]:
    """Plan settings an accelerate config file cannot carry."""
    comments = []
    strategy = parallel.resolved_strategy
    fsdp2 = strategy in FSDP_STRATEGIES and parallel.fsdp_version == 2
    if parallel.tensor_parallel > 1 and not fsdp2 and strategy not in ZERO_STRATEGIES:
        comments.append(f"tensor parallel {parallel.tensor_parallel}: accelerate sets it with FSDP2 "
                        "(parallelism_config_tp_size) or DeepSpeed AutoTP only: plan with fsdp_version 2 or zero*")
    if strategy == "ddp" and parallel.ddp_bucket_cap_mb != 25:
        comments.append(f"DDP bucket_cap_mb {parallel.ddp_bucket_cap_mb} is no accelerate config key: pass "
                        "TrainingArguments(ddp_bucket_cap_mb=...) or DistributedDataParallelKwargs(bucket_cap_mb=...)")
    return comments


def config_entries(model: ModelSpec, run: RunConfig, parallel: ParallelConfig, breakdown: Breakdown) -> list:
    """The accelerate config as yaml_lines entries (keys, values and comment lines)."""
    strategy = parallel.resolved_strategy
    entries: list = [("compute_environment", "LOCAL_MACHINE"), ("debug", False),
                     ("distributed_type", DISTRIBUTED_TYPES[strategy]), *_machine_entries(parallel)]
    if strategy in ZERO_STRATEGIES:
        entries += ["mixed_precision: bf16/fp16 are set in " + DEEPSPEED_CONFIG_FILE
                    + " (accelerate refuses mixed_precision beside deepspeed_config_file)",
                    ("deepspeed_config", deepspeed_section(parallel))]
        if run.method == "qlora" and strategy == "zero3":
            entries.append(QLORA_STORAGE.format(wrapper="ZeRO-3"))
    else:
        entries.append(("mixed_precision", _precision(run, breakdown)))
    if strategy in FSDP_STRATEGIES:
        entries += [*_fsdp_comments(model, run, parallel), ("fsdp_config", fsdp_section(model, run, parallel))]
        if parallelism_section(parallel):
            entries.append(("parallelism_config", parallelism_section(parallel)))
    return entries + [("use_cpu", False), *_unexpressed(parallel)]


def launch_environment(model: ModelSpec, run: RunConfig, parallel: ParallelConfig, breakdown: Breakdown) -> dict:
    """The variables `accelerate launch` exports from this config, which a plain torchrun needs to set
    itself (utils/launch.py 1.16: prepare_multi_gpu_env for DDP/FSDP, prepare_deepspeed_cmd_env for ZeRO)."""
    strategy = parallel.resolved_strategy
    if strategy in ZERO_STRATEGIES:
        return {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": str(deepspeed_section(parallel)["zero3_init_flag"]).lower(),
                "ACCELERATE_DEEPSPEED_CONFIG_FILE": DEEPSPEED_CONFIG_FILE}
    env = {"ACCELERATE_MIXED_PRECISION": _precision(run, breakdown)}
    if strategy in FSDP_STRATEGIES:
        env["ACCELERATE_USE_FSDP"] = "true"
        for key, value in fsdp_section(model, run, parallel).items():
            env[FSDP_ENV_NAMES.get(key, key.upper())] = str(value).lower() if isinstance(value, bool) else str(value)
        parallelism = parallelism_section(parallel)
        if parallelism:
            env["ACCELERATE_USE_PARALLELISM_CONFIG"] = "true"
            env |= {key.upper(): str(value) for key, value in parallelism.items()}
    return env


def torchrun_arguments(parallel: ParallelConfig) -> list[str]:
    """torchrun's process flags as accelerate launch passes them across machines (prepare_multi_gpu_env:
    node_rank = machine_rank, rdzv_endpoint = main_process_ip:port; a config's same_network never
    reaches it, since the launch flag's default False is not None)."""
    arguments = ["--nproc_per_node", str(parallel.gpus), "--nnodes", str(parallel.nodes)]
    if parallel.nodes > 1:
        arguments += ["--node_rank", "MACHINE_RANK", "--rdzv_backend", "static",
                      "--rdzv_endpoint", f"{MAIN_HOST_PLACEHOLDER}:{MAIN_PROCESS_PORT}"]
    return arguments


def launch_lines(model: ModelSpec, run: RunConfig, parallel: ParallelConfig, breakdown: Breakdown) -> list[str]:
    """Comment lines: the accelerate launch command, and the torchrun line that starts the same processes."""
    if parallel.is_single:
        return ["launch:", f"  accelerate launch --config_file {CONFIG_FILE} {TRAIN_SCRIPT}",
                f"  or simply: python {TRAIN_SCRIPT}"]
    others = "1" if parallel.nodes == 2 else f"1 .. {parallel.nodes - 1}"
    every_machine = (f" on every machine (MACHINE_RANK 0 on the main one, {others} on the others)"
                     if parallel.nodes > 1 else "")
    environment = " ".join(f"{name}={value}" for name, value in launch_environment(model, run, parallel,
                                                                                    breakdown).items())
    return [f"launch{every_machine}:",
            f"  accelerate launch --config_file {CONFIG_FILE}"
            + (" --machine_rank MACHINE_RANK" if parallel.nodes > 1 else "") + f" {TRAIN_SCRIPT}",
            "or the same processes with torchrun (which does not read the config: these are the variables "
            "accelerate launch exports from it):",
            f"  {environment} \\", f"  torchrun {' '.join(torchrun_arguments(parallel))} {TRAIN_SCRIPT}"]


def accelerate_config(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig,
                      breakdown: Breakdown) -> str:
    """An accelerate config file (what `accelerate config` writes) for the plan, then its launch lines."""
    require_training("accelerate", run)
    header = [*header_lines(model, gpu, run, breakdown, TARGET_VERSIONS), describe_parallel(parallel)]
    if parallel.is_single:
        header.append("the plan is single-GPU: this config launches one process (plan with --gpus N --strategy "
                      "ddp|fsdp|zero3 ... for a multi-GPU config)")
    entries = [*header, "", *config_entries(model, run, parallel, breakdown), "",
               *launch_lines(model, run, parallel, breakdown)]
    return "\n".join(yaml_lines(entries)) + "\n"


__all__ = ["CONFIG_FILE", "DEEPSPEED_CONFIG_FILE", "TARGET_VERSIONS", "accelerate_config", "config_entries",
           "decoder_layer_class", "deepspeed_section", "describe_parallel", "fsdp_section", "launch_environment",
           "launch_lines", "parallelism_section", "torchrun_arguments"]
