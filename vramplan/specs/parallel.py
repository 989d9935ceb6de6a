"""ParallelConfig: how a run is spread over GPUs and nodes, and the framework knobs that change memory.

One GPU is `ParallelConfig()` (strategy "single"); every field then keeps today's plan. A
multi-GPU run names the data-parallel strategy, the tensor-parallel degree, what is offloaded
to the host and the wrapper's own settings:

- strategy: ddp (torch DistributedDataParallel), fsdp (FSDP FULL_SHARD / FSDP2 fully_shard),
  fsdp-grad-op (SHARD_GRAD_OP: parameters stay unsharded from forward to the end of backward),
  fsdp-hybrid (HYBRID_SHARD: shard inside a node, replicate across nodes), zero1 / zero2 / zero3
  (DeepSpeed ZeRO stages: optimizer state / + gradients / + parameters partitioned).
- offload: none, optimizer (DeepSpeed offload_optimizer) or params (DeepSpeed offload_param, which
  implies offload_optimizer; FSDP CPUOffload(offload_params=True), which moves parameters,
  gradients and the optimizer step to the CPU); `offload_device` nvme is ZeRO-Infinity (ZeRO-3 only).
- DeepSpeed sizes are element counts as in its JSON config, or "auto": the value transformers'
  HfTrainerDeepSpeedConfig fills in from the model (hidden^2, 0.9 hidden^2, 10 hidden).

The knobs of one framework are refused under another's strategy only where they would be
silently ignored and the user clearly meant them (offload optimizer alone under FSDP).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["single", "ddp", "fsdp", "fsdp-grad-op", "fsdp-hybrid", "zero1", "zero2", "zero3"]
STRATEGIES: tuple[str, ...] = Strategy.__args__
FSDP_STRATEGIES = ("fsdp", "fsdp-grad-op", "fsdp-hybrid")
ZERO_STRATEGIES = ("zero1", "zero2", "zero3")
Offload = Literal["none", "optimizer", "params"]
OffloadDevice = Literal["cpu", "nvme"]
FsdpWrap = Literal["decoder-layer", "decoder-layer+lora"]
BucketSize = int | Literal["auto"]

MAX_GPUS_PER_NODE = 1 << 10
MAX_NODES = 1 << 14
MAX_BUCKET_ELEMENTS = 1 << 40


class ParallelConfig(BaseModel):
    """Every multi-GPU knob that changes a rank's or the host's memory; `ParallelConfig()` is one GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: int = Field(default=1, ge=1, le=MAX_GPUS_PER_NODE, description="GPUs per node")
    nodes: int = Field(default=1, ge=1, le=MAX_NODES, description="nodes (machines)")
    strategy: Strategy | None = Field(
        default=None, description="data-parallel strategy; None: single on one GPU, ddp on more")
    tensor_parallel: int = Field(default=1, ge=1, le=MAX_GPUS_PER_NODE,
                                 description="tensor-parallel degree T (Megatron-style column/row split), within a node")
    offload: Offload = Field(default="none", description="what lives in host memory: optimizer state, or params "
                                                         "(with gradients and optimizer state)")
    offload_device: OffloadDevice = Field(default="cpu", description="cpu, or nvme (ZeRO-3 only: ZeRO-Infinity)")
    fsdp_version: Literal[1, 2] = Field(
        default=1, description="FSDP1 flat parameters or FSDP2 per-parameter DTensor shards (default 1: accelerate "
                               "1.16's FullyShardedDataParallelPlugin, utils/dataclasses.py)")
    fsdp_wrap: FsdpWrap | None = Field(
        default=None, description="FSDP units: each decoder layer, or also each LoRA layer its own unit (answer.ai "
                                  "fsdp_qlora; None: that for LoRA runs, as transformers' Trainer wraps a peft model)")
    limit_all_gathers: bool = Field(default=True, description="FSDP1 rate limiter: at most two all-gathers in flight")
    forward_prefetch: bool = Field(default=False, description="FSDP: all-gather the next unit during this one's forward")
    backward_prefetch: bool | None = Field(
        default=None, description="FSDP: all-gather the next unit during this one's backward; None: the launcher's "
                                  "default (accelerate 1.16 leaves FSDP1's unset: none; FSDP2 prefetches one)")
    cpu_ram_efficient_loading: bool = Field(
        default=True, description="accelerate fsdp_cpu_ram_efficient_loading (+ sync_module_states): only rank 0 "
                                  "keeps the checkpoint on the CPU (transformers 4.x; 5.x reads it in every rank first)")
    reduce_bucket_size: BucketSize = Field(default="auto", description="DeepSpeed elements per gradient reduce bucket")
    allgather_bucket_size: int = Field(default=500_000_000, ge=1, le=MAX_BUCKET_ELEMENTS,
                                       description="DeepSpeed ZeRO-1/2 elements per parameter all-gather chunk (in place "
                                                   "into the flat 16-bit buffer: no memory of its own in 0.19.8)")
    overlap_comm: bool | None = Field(default=None, description="DeepSpeed overlap_comm; None: DeepSpeed's default "
                                                                "(true at ZeRO-3, false at 1-2)")
    stage3_prefetch_bucket_size: BucketSize = Field(default="auto", description="ZeRO-3 elements prefetched ahead")
    stage3_max_live_parameters: int = Field(default=1_000_000_000, ge=0, le=MAX_BUCKET_ELEMENTS,
                                            description="ZeRO-3 most gathered elements alive at once")
    stage3_param_persistence_threshold: BucketSize = Field(
        default="auto", description="ZeRO-3: parameters this small stay unpartitioned on every rank")
    ddp_bucket_cap_mb: int = Field(default=25, ge=1, le=1 << 20, description="DDP gradient bucket size in MiB")

    @model_validator(mode="after")
    def _consistent(self):
        if self.strategy == "single" and self.world_size > 1:
            raise ValueError(f"strategy single is one GPU; {self.world_size} GPUs need ddp, fsdp* or zero*")
        if self.gpus % self.tensor_parallel:
            raise ValueError(f"tensor_parallel {self.tensor_parallel} must divide the {self.gpus} GPUs per node")
        if self.resolved_strategy == "single" and self.offload != "none":
            raise ValueError("offload needs a sharding strategy: --strategy zero2/zero3 (DeepSpeed) or fsdp")
        if self.resolved_strategy in FSDP_STRATEGIES and self.offload == "optimizer":
            raise ValueError("FSDP offloads parameters, gradients and the optimizer step together: "
                             "use offload params, or a DeepSpeed strategy (zero1/zero2/zero3) for the optimizer alone")
        if self.resolved_strategy == "ddp" and self.offload != "none":
            raise ValueError("ddp does not offload: use fsdp (offload params) or zero1/zero2/zero3")
        if self.offload == "params" and self.resolved_strategy in ("zero1", "zero2"):
            raise ValueError("DeepSpeed offloads parameters at ZeRO stage 3 only: use zero3, or offload optimizer")
        if self.offload_device == "nvme" and (self.resolved_strategy != "zero3" or self.offload == "none"):
            raise ValueError("nvme offload is ZeRO-Infinity: strategy zero3 with offload optimizer or params")
        for name in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, bool) or not 0 <= value <= MAX_BUCKET_ELEMENTS):
                raise ValueError(f"{name} must be 'auto' or 0 to {MAX_BUCKET_ELEMENTS:,} elements (got {value})")
        return self

    @property
    def resolved_backward_prefetch(self) -> bool:
        """FSDP2 always prefetches the next unit in backward (_fsdp_param_group.py `_backward_prefetch`);
        FSDP1 under accelerate only when fsdp_backward_prefetch is set (utils/dataclasses.py, 1.16)."""
        if self.backward_prefetch is not None:
            return self.backward_prefetch
        return self.fsdp_version == 2

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    @property
    def resolved_strategy(self) -> str:
        if self.strategy is not None:
            return self.strategy
        return "single" if self.world_size == 1 else "ddp"

    @property
    def data_parallel(self) -> int:
        """Ranks that split the batch: world size / T."""
        return self.world_size // self.tensor_parallel

    @property
    def shard_count(self) -> int:
        """Ranks one sharded tensor is split over: the data-parallel group, or one node's under fsdp-hybrid."""
        strategy = self.resolved_strategy
        if strategy in ("single", "ddp"):
            return 1
        if strategy == "fsdp-hybrid":
            return self.gpus // self.tensor_parallel
        return self.data_parallel

    @property
    def is_single(self) -> bool:
        return self.world_size == 1 and self.resolved_strategy == "single"

    @property
    def framework(self) -> str:
        """torch (ddp, fsdp*), deepspeed (zero*) or none (one GPU)."""
        strategy = self.resolved_strategy
        return "deepspeed" if strategy in ZERO_STRATEGIES else ("none" if strategy == "single" else "torch")


def auto_bucket_sizes(hidden_size: int) -> dict[str, int]:
    """transformers' "auto" DeepSpeed sizes from the model's hidden size h: reduce_bucket_size h^2,
    stage3_prefetch_bucket_size int(0.9 h^2), stage3_param_persistence_threshold 10 h
    (transformers/integrations/deepspeed.py, HfTrainerDeepSpeedConfig.trainer_config_finalize)."""
    return {"reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size}


def resolved_bucket(parallel: ParallelConfig, name: str, hidden_size: int) -> int:
    """A DeepSpeed size field with "auto" replaced by transformers' value for this model."""
    value = getattr(parallel, name)
    return auto_bucket_sizes(hidden_size)[name] if value == "auto" else value


def resolved_overlap_comm(parallel: ParallelConfig) -> bool:
    """overlap_comm as given, else DeepSpeed's own default: true at ZeRO-3, false at stages 1-2
    (runtime/zero/config.py `overlap_comm_valid`, 0.19.8)."""
    if parallel.overlap_comm is not None:
        return parallel.overlap_comm
    return parallel.resolved_strategy == "zero3"


def resolved_fsdp_wrap(parallel: ParallelConfig, run) -> str:
    """The FSDP units: as given, else LoRA layers as their own units for a LoRA run - transformers'
    Trainer applies peft's `fsdp_auto_wrap_policy` to a peft model (integrations/fsdp.py, trainer.py,
    5.24; peft/utils/other.py) - and decoder layers otherwise."""
    if parallel.fsdp_wrap is not None:
        return parallel.fsdp_wrap
    return "decoder-layer+lora" if run.uses_lora else "decoder-layer"
