"""Communication buffers: DDP's gradient buckets, DeepSpeed's reduce buckets, FSDP's reduce-scatter
buffers (inside the PyTorch allocator), and NCCL's own buffers (outside it).

- DDP (torch/nn/parallel/distributed.py, reducer.hpp, torch 2.13): the Reducer's buckets hold a flat
  copy of every trainable parameter's gradient (`Bucket::gradients`), and with the default
  `gradient_as_bucket_view=False` `param.grad` is a separate tensor: gradients cost twice. The 25 MiB
  `bucket_cap_mb` sets how many buckets, not their total. Allocated when DDP wraps the model.
- ZeRO-1/2 (deepspeed/runtime/zero/stage_1_and_2.py `setup_buckets`, 0.19.8): one reduce buffer of
  `reduce_bucket_size` elements in the gradient dtype, two ("double buffers") with overlap_comm.
  ZeRO-3 (stage3.py): one `reduce_bucket_size` buffer per gradient dtype. overlap_comm defaults to
  true at stage 3 and false at stages 1-2 (runtime/zero/config.py `overlap_comm_valid`).
  transformers' docs state that overlap_comm "uses 4.5x the allgather_bucket_size and
  reduce_bucket_size values"; that multiple is not in DeepSpeed 0.19.8's code (the all-gather is
  done in place into the flat parameter buffer, utils.py `all_gather_dp_groups`), so vramplan
  counts the buffers the code allocates.
- FSDP2 (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py `foreach_reduce`): the
  reduce-scatter input holds one unit's gradients in the reduce dtype (accelerate 1.16 sets
  reduce_dtype = param_dtype, utils/dataclasses.py `set_mixed_precision`), one earlier input is kept
  in flight (`reduce_scatter_max_input_buffers = 1`), and the output is 1/N of it.
- NCCL (outside `max_memory_allocated`; nvidia-smi sees it): per communicator, measured 544 MiB
  for 2 ranks and 688 MiB for more on 4x A100 NVLink (NVIDIA/nccl issue 964; NCCL's 4 MiB Simple +
  512 KiB LL + 4.69 MiB LL128 FIFO per channel and peer, src/init.cc), plus 288 MiB per rank of
  NVLink SHARP buffers on Hopper-class GPUs with more than 2 ranks in the node (vLLM issue 9699:
  "nvlsPerRankSize 301989888" on 8x H200). The channel count depends on the topology and the NCCL
  version, so this term is an estimate (about +/-0.5 GiB); all-to-all and send/recv add more.
"""
from __future__ import annotations

from vramplan.memory.dtypes import DTYPE_BYTES
from vramplan.memory.terms import term, total
from vramplan.specs.parallel import ParallelConfig, resolved_bucket, resolved_overlap_comm

NCCL_COMMUNICATOR_BYTES_TWO_RANKS = 544 * 2**20
NCCL_COMMUNICATOR_BYTES = 688 * 2**20
NVLS_BYTES_PER_RANK = 301_989_888
_SOURCE_DDP = "torch/nn/parallel/distributed.py, reducer.hpp (torch 2.13)"
_SOURCE_ZERO = "deepspeed/runtime/zero/stage_1_and_2.py setup_buckets, stage3.py (0.19.8)"
_SOURCE_FSDP = "torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce (torch 2.13)"


def bucket_terms(parallel: ParallelConfig, model, dtypes, trainable_grad_terms, sizes=None) -> dict[str, list]:
    """{phase: [Term]} of the communication buffers inside the PyTorch allocator (module docstring)."""
    strategy = parallel.resolved_strategy
    grad16 = DTYPE_BYTES[dtypes.compute]
    if strategy == "ddp":
        buckets = [term("DDP gradient buckets (a flat copy of every trainable gradient)", "B",
                        (("B", int(total(trainable_grad_terms))),), _SOURCE_DDP)]
        return _every_phase(buckets)
    if strategy.startswith("zero"):
        elements = resolved_bucket(parallel, "reduce_bucket_size", model.hidden_size)
        buffers = 2 if resolved_overlap_comm(parallel) and strategy != "zero3" else 1
        buckets = [term("reduce bucket(s) (reduce_bucket_size elements)", "buffers x elements x 16-bit",
                        (("buffers", buffers), ("elements", elements), ("B", grad16)), _SOURCE_ZERO)]
        return _every_phase(buckets)
    if strategy.startswith("fsdp") and sizes is not None:
        n = parallel.shard_count
        layer = []
        if sizes.layer_trainable:
            layer = [term("reduce-scatter input (one layer's gradients)", "elements x R",
                          (("elements", sizes.layer_trainable), ("R", grad16)), _SOURCE_FSDP),
                     term("reduce-scatter output (1/N of the input)", "elements x R / N",
                          (("elements", sizes.layer_trainable), ("R", grad16), ("ranks", n)), _SOURCE_FSDP,
                          rounding="shard")]
        root = [term("reduce-scatter input of the root's gradients", "elements x R",
                     (("elements", sizes.root_trainable), ("R", grad16)), _SOURCE_FSDP)] if sizes.root_trainable else []
        return {"layer_backward": layer, "backward_end": root}
    return {}


def _every_phase(items) -> dict[str, list]:
    return {phase: list(items) for phase in ("forward", "loss_backward", "layer_backward", "backward_end", "optimizer",
                                             "generate")}


def communicators(parallel: ParallelConfig) -> int:
    """NCCL communicators a rank joins: the data-parallel group; HYBRID_SHARD's shard and replicate
    groups; the tensor-parallel group beside a data-parallel one."""
    count = 0
    if parallel.data_parallel > 1:
        count += 2 if parallel.resolved_strategy == "fsdp-hybrid" and parallel.nodes > 1 else 1
    if parallel.tensor_parallel > 1:
        count += 1
    return count


def nccl_buffer_terms(parallel: ParallelConfig, gpu) -> list:
    """NCCL's per-rank buffers outside the PyTorch allocator (module docstring): an estimate."""
    comms = communicators(parallel)
    if not comms:
        return []
    ranks_in_group = parallel.data_parallel if parallel.data_parallel > 1 else parallel.tensor_parallel
    per = NCCL_COMMUNICATOR_BYTES_TWO_RANKS if ranks_in_group == 2 and comms == 1 else NCCL_COMMUNICATOR_BYTES
    items = [term("NCCL communicator buffers", "communicators x B", (("communicators", comms), ("B", per)),
                  "NVIDIA/nccl issue 964 (4x A100 NVLink, nvidia-smi)")]
    if _has_nvls(gpu) and parallel.gpus > 2:
        items.append(term("NVLink SHARP buffers (Hopper, > 2 GPUs in the node)", "B", (("B", NVLS_BYTES_PER_RANK),),
                          "vllm-project/vllm issue 9699 (8x H200 NCCL log)"))
    return items


def _has_nvls(gpu) -> bool:
    major = (gpu.compute_capability or "").split(".")[0]
    return gpu.vendor == "nvidia" and major.isdigit() and int(major) >= 9
