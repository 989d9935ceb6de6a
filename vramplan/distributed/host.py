"""The host (CPU) RAM of one node: offloaded state and parameters, pinned buffers, the loading spike.

Per node = per rank x the node's GPUs (every rank of a node offloads its own shard).
- Offloaded optimizer state: DeepSpeed ZeRO-Offload keeps the fp32 master partition, its fp32
  gradients and the optimizer state in pinned host memory (stage_1_and_2.py:562-574, 937-940;
  stage3.py `grad_partitions_flat_buffer` pinned, 0.19.8); FSDP `CPUOffload(offload_params=True)`
  keeps the parameter shard and its gradient in pinned host memory and steps the optimizer there
  (torch/distributed/fsdp/_flat_param.py:1258-1265, torch 2.13).
- Offloaded parameters: ZeRO-3 offload_param's 16-bit partition; FSDP's parameter shard.
- Pinned buffers: ZeRO-1/2 offload's pinned 16-bit staging copy of the partition
  (stage_1_and_2.py:566-574); with nvme, the swap buffers instead of the offloaded tensors:
  offload_param buffer_count 5 x buffer_size 1e8 elements x 16-bit, offload_optimizer buffer_count
  4 x the rank's fp32 partition (up to sub_group_size 1e9 elements) (runtime/zero/offload_config.py).
- Loading spike: `from_pretrained` builds the model on the CPU in the load dtype (fp32 for
  mixed-precision full fine-tuning, else the 16-bit dtype of the checkpoint, assumed 16-bit). On
  transformers 5 weights loaded in the checkpoint's own dtype stay views of the mmap'd file: one
  copy in the node's page cache, shared by its ranks (`vramplan.stack.rules.checkpoint_stays_mapped`);
  a conversion (fp32) is an anonymous copy in every process. On transformers 4.x every process
  copies the weights, except that only rank 0 does with accelerate's fsdp_cpu_ram_efficient_loading
  (`fsdp_loads_on_rank0_only`). Under ZeRO-3, zero.Init partitions while it loads: DeepSpeed's
  estimator counts the largest layer in every rank (`largest_layer_params x 4 x GPUs per node`,
  estimate_zero3_model_states_mem_needs with zero_init), and so does vramplan (in the load dtype). DeepSpeed's estimator
  counts the same spike (`4 x params x GPUs per node`, estimate_zero2_model_states_mem_needs).
  It comes before the training-time state exists, so the node needs the larger of the two
  (`HostMemory.required_bytes`).
DeepSpeed's host estimates multiply by an `additional_buffer_factor` of 1.5; vramplan counts the
buffers the code allocates instead and does not apply it (the README's DeepSpeed comparison).
"""
from __future__ import annotations

from vramplan.distributed.deepspeed_states import SUB_GROUP_SIZE
from vramplan.memory import parameters
from vramplan.memory.terms import as_dict, term, total
from vramplan.specs.cluster import HostMemory
from vramplan.specs.parallel import ParallelConfig

NVME_PARAM_BUFFERS = (5, 100_000_000)  # offload_config.py DeepSpeedZeroOffloadParamConfig buffer_count, buffer_size
NVME_OPTIMIZER_BUFFERS = 4  # DeepSpeedZeroOffloadOptimizerConfig buffer_count
_SOURCE = "vramplan.distributed.host (module docstring)"


def node_terms(per_rank_terms, gpus: int, name: str) -> list:
    """One node's bytes of a per-rank host component: its ranks x each rank's bytes."""
    nbytes = int(total(per_rank_terms))
    return [term(name, "ranks on the node x B/rank", (("ranks", gpus), ("B/rank", nbytes)), _SOURCE)] if nbytes else []


def loading_terms(model, run, parallel: ParallelConfig) -> list:
    """The checkpoint's CPU copy while loading, in the node that holds the most (module docstring)."""
    from vramplan.stack.profile import resolve_stack
    from vramplan.stack.rules import checkpoint_stays_mapped, fsdp_loads_on_rank0_only

    load_bytes = 4 if run.method == "full" and run.full_precision == "mixed" else 2
    strategy = parallel.resolved_strategy
    transformers = resolve_stack(run.stack)["transformers"]
    if strategy == "zero3":
        largest = max(model.vocab_size * model.hidden_size,
                      *(lin.out_features * lin.in_features for lin in model.layer_linears("linear")))
        return [term("the largest layer in every rank while zero.Init loads and partitions", "ranks x elements x B",
                     (("ranks", parallel.gpus), ("elements", largest), ("B", load_bytes)),
                     "deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs (zero_init)")]
    if load_bytes == 2 and checkpoint_stays_mapped(transformers):
        loaders, who = 1, "the mmap'd checkpoint in the page cache, shared by the node's ranks"
    elif parallel.cpu_ram_efficient_loading and strategy.startswith("fsdp") and fsdp_loads_on_rank0_only(transformers):
        loaders, who = 1, "rank 0 alone (cpu_ram_efficient_loading)"
    else:
        loaders, who = parallel.gpus, "a copy in every rank of the node"
    return [term(f"checkpoint while loading: {who}", "copies x parameters x B",
                 (("copies", loaders), ("parameters", parameters.parameter_count(model)), ("B", load_bytes)),
                 "transformers from_pretrained; accelerate fsdp_cpu_ram_efficient_loading")]


def nvme_buffer_terms(parallel: ParallelConfig, trainable_per_rank: int) -> list:
    """Pinned swap buffers of ZeRO-Infinity (nvme) per rank (module docstring)."""
    if parallel.offload_device != "nvme":
        return []
    items = [term("optimizer swap buffers (nvme)", "buffers x elements x fp32",
                  (("buffers", NVME_OPTIMIZER_BUFFERS), ("elements", min(SUB_GROUP_SIZE, trainable_per_rank)), ("B", 4)),
                  "deepspeed/runtime/zero/offload_config.py")]
    if parallel.offload == "params":
        count, size = NVME_PARAM_BUFFERS
        items.append(term("parameter swap buffers (nvme)", "buffers x elements x 16-bit",
                          (("buffers", count), ("elements", size), ("B", 2)), "deepspeed/runtime/zero/offload_config.py"))
    return items


def host_memory(parallel: ParallelConfig, model, run, per_rank: dict[str, list], host_ram_bytes: int | None,
                trainable_per_rank: int) -> HostMemory:
    """HostMemory of the node from each rank's offloaded terms ({host component: [Term]})."""
    gpus = parallel.gpus
    nvme = parallel.offload_device == "nvme"
    comps: dict[str, list] = {}
    if not nvme:
        comps["offloaded_optimizer_state"] = node_terms(per_rank.get("offloaded_optimizer_state", []), gpus,
                                                        "offloaded optimizer state (and gradients), per node")
        comps["offloaded_parameters"] = node_terms(per_rank.get("offloaded_parameters", []), gpus,
                                                   "offloaded parameters, per node")
    pinned = list(per_rank.get("pinned_buffers", [])) + nvme_buffer_terms(parallel, trainable_per_rank)
    comps["pinned_buffers"] = node_terms(pinned, gpus, "pinned transfer buffers, per node") if pinned else []
    comps["loading_spike"] = loading_terms(model, run, parallel)
    components = {name: int(total(items)) for name, items in comps.items() if items}
    not_modelled = tuple(name for name in ("pinned_buffers",) if name not in components)
    return HostMemory(components=components, not_modelled=not_modelled, host_ram_bytes=host_ram_bytes,
                      terms={name: tuple(as_dict(item) for item in items) for name, items in comps.items() if items})
