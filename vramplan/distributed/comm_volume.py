"""Bytes one rank moves per training step under each strategy: what `solve.cheapest_strategy` orders by.

Collectives are counted as NCCL's ring algorithm moves them: over k ranks an all-reduce of M
bytes sends 2 (k-1)/k x M per rank, a reduce-scatter or an all-gather (k-1)/k x M (Rajbhandari
et al. 2020, "ZeRO", section 7 counts the same volumes without the (k-1)/k factor). From the plan:
E the trainable elements, C the wrapper's compute (gradient-reduction) dtype bytes, P the bytes of
every parameter gathered whole (the compute dtype; 4-bit codes stay packed: `units.unit_sizes`)
and P_layers the decoder layers' part of P. Per micro-batch step (one forward and backward, then
the reduction; gradient accumulation repeats the all-gathers every micro-batch):

| strategy     | network bytes per rank                                   | source |
|--------------|----------------------------------------------------------|--------|
| ddp          | all-reduce E x the parameters' own dtype (fp32 masters in mixed precision, the LoRA dtype) | torch reducer.cpp all-reduces `param.grad` as is; ZeRO 7.1 "2 Psi" |
| zero1, zero2 | reduce-scatter E x C + all-gather of the updated E x C   | ZeRO 7.2.1: "P_os and P_os+g incur no additional communication" |
| zero3        | all-gather P in forward and again in backward + reduce-scatter E x C | ZeRO 7.2.2: 3 Psi, 1.5x DDP |
| fsdp         | all-gather P in forward, P_layers in backward (the root is not resharded after forward, units.py) + reduce-scatter E x C | torch/distributed/fsdp (torch 2.13) |
| fsdp-grad-op | all-gather P in forward only (kept to the end of backward) + reduce-scatter E x C | ShardingStrategy.SHARD_GRAD_OP |
| fsdp-hybrid  | fsdp's, within a node (k = GPUs per node / T), + all-reduce of the E x C / k shard across nodes | ShardingStrategy.HYBRID_SHARD |

C is the compute dtype for FSDP (accelerate 1.16 sets reduce_dtype = param_dtype) and DeepSpeed
(gradients in the 16-bit module's dtype, communication_data_type unset). Offload adds host<->GPU
(PCIe) bytes per rank and step, s = the shard count:
- DeepSpeed offload optimizer: the gradient partition E x C / s to the host, the updated 16-bit
  partition E x C / s back (stage_1_and_2.py / stage3.py, 0.19.8); offload params (ZeRO-3) adds the
  parameter partition P / s fetched for the forward and again for the backward;
- FSDP CPUOffload(offload_params=True): the parameter shard for every all-gather ((P + P_layers) / s)
  and the gradient shard E x C / s to the host; the optimizer steps on the host.
Tensor parallelism's activation all-reduces are the same for every strategy at a given T and are not
counted here.
"""
from __future__ import annotations

from dataclasses import dataclass

from vramplan.memory.terms import FLOOR, SHARD, term, total
from vramplan.specs.parallel import ZERO_STRATEGIES, ParallelConfig

SOURCE_ZERO = "Rajbhandari et al. 2020, ZeRO, section 7 (ring collectives, (k-1)/k per rank)"
SOURCE_TORCH = "torch/nn/parallel/distributed.py reducer; torch/distributed/fsdp (torch 2.13)"
SOURCE_OFFLOAD = "deepspeed/runtime/zero/stage_1_and_2.py, stage3.py (0.19.8); torch FSDP CPUOffload"


@dataclass(frozen=True)
class StepSizes:
    """What a step communicates, from the plan: trainable elements, bytes per gradient element in
    DDP (the parameters' dtype) and in the sharded wrappers (compute dtype), and gathered parameter bytes."""

    trainable_elements: int
    ddp_grad_bytes: int
    compute_bytes: int
    gathered_bytes: int
    gathered_layer_bytes: int


@dataclass(frozen=True)
class CommVolume:
    """Bytes one rank sends per micro-batch step over NVLink / the network, and over PCIe to the host."""

    network: tuple
    pcie: tuple
    inter_node_bytes: int

    @property
    def network_bytes(self) -> int:
        return int(total(self.network))

    @property
    def pcie_bytes(self) -> int:
        return int(total(self.pcie))

    @property
    def order_key(self) -> tuple:
        """Offloading strategies last (their PCIe traffic competes with compute), then fewest network bytes."""
        return (self.pcie_bytes > 0, self.network_bytes, self.pcie_bytes)


def _collective(name: str, count: int, nbytes: int, ranks: int, source: str):
    """`count` ring passes of a `nbytes` buffer over `ranks` ranks: count x M x (k-1)/k per rank."""
    return term(name, "passes x M x (k-1)/k", (("passes", count), ("M", int(nbytes)), ("(k-1)/k", (ranks - 1) / ranks)),
                source, rounding=FLOOR)


def _host_copy(name: str, nbytes: int, shards: int):
    return term(name, "M / s", (("M", int(nbytes)), ("s", shards)), SOURCE_OFFLOAD, rounding=SHARD)


def step_volume(sizes: StepSizes, parallel: ParallelConfig) -> CommVolume:
    """Network and PCIe bytes per rank of one micro-batch step under `parallel` (module docstring)."""
    strategy = parallel.resolved_strategy
    k = parallel.shard_count if strategy not in ("single", "ddp") else parallel.data_parallel
    grads = sizes.trainable_elements * sizes.compute_bytes
    if k <= 1:
        return CommVolume((), (), 0)
    network, pcie = [], []
    replicate_bytes = 0
    if strategy == "ddp":
        network.append(_collective("all-reduce of the gradients (parameter dtype)", 2,
                                   sizes.trainable_elements * sizes.ddp_grad_bytes, k, SOURCE_TORCH))
    elif strategy in ("zero1", "zero2"):
        network.append(_collective("reduce-scatter of the 16-bit gradients + all-gather of the updated parameters",
                                   2, grads, k, SOURCE_ZERO))
    else:
        forward_and_backward = sizes.gathered_bytes if strategy == "zero3" else sizes.gathered_layer_bytes
        network.append(_collective("all-gather of the parameters in forward", 1, sizes.gathered_bytes, k,
                                   SOURCE_ZERO if strategy == "zero3" else SOURCE_TORCH))
        if strategy != "fsdp-grad-op":
            network.append(_collective("all-gather of the parameters again in backward", 1, forward_and_backward, k,
                                       SOURCE_ZERO if strategy == "zero3" else SOURCE_TORCH))
        network.append(_collective("reduce-scatter of the gradients", 1, grads, k,
                                   SOURCE_ZERO if strategy == "zero3" else SOURCE_TORCH))
        if strategy == "fsdp-hybrid" and parallel.nodes > 1:
            replicate = _collective("all-reduce of the gradient shard across nodes", 2, -(-grads // k),
                                    parallel.nodes, SOURCE_TORCH)
            network.append(replicate)
            replicate_bytes = int(replicate.bytes)
    if parallel.offload != "none":
        if strategy in ZERO_STRATEGIES:
            pcie.append(_host_copy("gradient partition to the host", grads, k))
            pcie.append(_host_copy("updated 16-bit partition back to the GPU", grads, k))
            if parallel.offload == "params":
                pcie.append(_host_copy("parameter partition to the GPU for forward and backward",
                                       2 * sizes.gathered_bytes, k))
        else:
            pcie.append(_host_copy("parameter shard to the GPU for every all-gather",
                                   sizes.gathered_bytes + sizes.gathered_layer_bytes, k))
            pcie.append(_host_copy("gradient shard to the host", grads, k))
    network_bytes = int(total(network))
    inter_node = replicate_bytes if strategy == "fsdp-hybrid" else (network_bytes if parallel.nodes > 1 else 0)
    return CommVolume(tuple(network), tuple(pcie), inter_node)


def step_sizes(model, gpu, run, parallel: ParallelConfig) -> StepSizes:
    """`StepSizes` of one rank's model slice as the wrapper trains it (rank_plan.wrapper_run)."""
    from vramplan.distributed import units
    from vramplan.distributed.rank_plan import wrapper_run
    from vramplan.distributed.tensor_parallel import tensor_parallel_slice
    from vramplan.memory.dtypes import DTYPE_BYTES, resolve_dtypes
    from vramplan.memory.plan import base_weight_terms, trainable_groups

    rank_model = tensor_parallel_slice(model, parallel.tensor_parallel)
    rank_run = wrapper_run(run, parallel.resolved_strategy)
    dtypes = resolve_dtypes(rank_run, gpu, rank_model)
    groups = trainable_groups(rank_model, rank_run, rank_run.lora_rank, dtypes.moe_experts)
    sizes = units.unit_sizes(rank_model, rank_run, dtypes, base_weight_terms)
    layers = rank_model.num_hidden_layers * sizes.layer_bytes
    return StepSizes(trainable_elements=sum(g.numel * g.count for g in groups),
                     ddp_grad_bytes=DTYPE_BYTES[dtypes.trainable], compute_bytes=DTYPE_BYTES[dtypes.compute],
                     gathered_bytes=layers + sizes.root_bytes, gathered_layer_bytes=layers)


def comm_volume(model, gpu, run, parallel: ParallelConfig) -> CommVolume:
    """Bytes per rank and micro-batch step of this run under `parallel`; nothing for inference or one rank."""
    if not run.trains or parallel.data_parallel <= 1:
        return CommVolume((), (), 0)
    return step_volume(step_sizes(model, gpu, run, parallel), parallel)
