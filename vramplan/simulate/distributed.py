"""One rank's real FSDP2 training step, in one process, with no GPU: the trace simulator's step
(`vramplan.simulate.engine`) run by torch's own `fully_shard` as rank k of N.

How: torch's fake process group (`torch.testing._internal.distributed.fake_pg`: every collective
returns at once and writes nothing; its outputs are the buffers FSDP2 allocated) on a "cpu"
DeviceMesh, with the model on FakeTensorMode's CPU tensors. FSDP2 runs on a CPU mesh as on a
CUDA one: its streams and events are the CPU no-ops of `torch.cpu.Stream`, but what it keeps
alive and when it drops it (the all-gather output held in `comm_ctx.all_gather_state` until the
next all-gather, the reduce-scatter inputs in `reduce_scatter_states`) does not depend on the
device type (torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py, torch 2.13); the CUDA
caching allocator's `max_memory_allocated` counts live blocks whatever stream they belong to, so
counting live storages stays exact. No "cuda" device is needed; the one device-specific branch
(`root_pre_forward` moving the inputs to the device) is moot on CPU.

FSDP2 frees and re-allocates an unsharded parameter by resizing its storage in place
(`_fsdp_param.free_storage` / `alloc_storage`); no op reaches a dispatch mode for that, so
`watch` wraps those two functions to tell the tracker (`AllocationTracker.resized`).

Wrapping is accelerate 1.16's `fsdp2_prepare_model` (accelerate/utils/fsdp_utils.py) with the
transformer-layer auto-wrap policy: `fully_shard` on every decoder layer (reshard after forward),
the input embedding its own unit when it is not tied, the tail [final norm, lm_head] (and the tied
embedding) one unit that does not reshard after forward, then the root. Mixed precision is
accelerate's `set_mixed_precision` (utils/dataclasses.py, FullyShardedDataParallelPlugin):
`MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=compute)`: parameters are all-gathered
and gradients reduce-scattered in bf16/fp16, and the fp32 trainable parameters (accelerate
upcasts them: "Upcast to fp32 master weights") keep fp32 shards and fp32 sharded gradients.
(accelerate 1.16 sets reduce_dtype = param_dtype, not fp32.) The run's dtypes already give fp32
trainable weights (full fine-tuning's master weights, peft's fp32 adapters), as accelerate's upcast
does. LoRA on a 16-bit base: the frozen base is sharded with the layer's LoRA weights in the same
unit. QLoRA: accelerate leaves the uint8 4-bit codes out of FSDP2 (`ignored_params`, "non-floating
frozen Params4bit"), so they and their quantization state stay whole on every rank and only the
LoRA weights and the float rest are sharded; the bnb_4bit_quant_storage=bf16 variant that shards
the codes is not simulated.

Categories beside the single-GPU simulator's (whose float_weights, lora_adapters, gradients and
optimizer_state now hold one rank's shards): `gathered_parameters` (flat all-gather outputs and
unsharded parameters), `unsharded_gradients` (a unit's full gradients in the reduce dtype, from
autograd storing them to the unit's reduce-scatter), `gradient_reduce` (reduce-scatter input and
output buffers, and the cast to the sharded gradients' dtype).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.simulate.engine import SimulationResult, simulate
from vramplan.simulate.hf_build import TORCH_DTYPES, decoder_layers

SUPPORTED_METHODS = ("full", "lora", "qlora")
WRAP_POLICIES = ("accelerate", "accelerate-peft", "layers-and-root")
"""accelerate: accelerate 1.16's units (layers, the embedding, the [norm, lm_head] tail, the root);
accelerate-peft: what accelerate 1.16 makes of peft's `fsdp_auto_wrap_policy`, which transformers'
Trainer sets for a peft model (distributed/fsdp.py `update_fsdp_plugin_peft`): FSDP2 wraps by
transformer_auto_wrap_policy or size_based_auto_wrap_policy only, and peft's `_or_policy` is neither,
so `fsdp2_prepare_auto_wrap_policy` returns None and no decoder layer gets its own unit: the root
holds every layer, gathered from the start of forward to the end of backward;
layers-and-root: `fully_shard` on every decoder layer and then the model (the root keeps the
embeddings, final norm and lm_head, unsharded from forward to the end of backward)."""


@dataclass(frozen=True)
class RankSimulation:
    """Per-rank simulated step of one distributed run: one SimulationResult per simulated rank."""

    strategy: str
    world_size: int
    ranks: dict[int, SimulationResult]

    @property
    def worst_rank(self) -> SimulationResult:
        return max(self.ranks.values(), key=lambda result: result.peak_bytes)


def simulate_ranks(model_spec, gpu_spec, run, parallel, ranks: tuple[int, ...] = (0,),
                   wrap_policy: str = "accelerate") -> RankSimulation:
    """Simulate `ranks` of `run` spread over `parallel` (FSDP2 only). Rank 0 is the worst rank: every
    rank stores each parameter's shard padded to ceil(dim 0 / N) rows (`FSDPParam._init_sharded_param`),
    but the optimizer state is built from the unpadded local shard, which is smaller on the last
    ranks when N does not divide dim 0. So one rank is enough; more are for checking that."""
    check_supported(model_spec, gpu_spec, run, parallel)
    world = parallel.world_size
    bad = [rank for rank in ranks if not 0 <= rank < world]
    if bad or not ranks:
        raise InputError("ranks", f"ranks must be 0 to {world - 1} (got {list(ranks)})")
    results = {}
    for rank in ranks:
        with fake_process_group(rank, world) as mesh:
            wrapper = Fsdp2Wrapper(mesh, run, resolve_dtypes(run, gpu_spec, model_spec), wrap_policy)
            results[rank] = simulate(model_spec, gpu_spec, run, wrapper=wrapper)
    return RankSimulation(strategy=parallel.resolved_strategy, world_size=world, ranks=results)


def check_supported(model_spec, gpu_spec, run, parallel) -> None:
    strategy = parallel.resolved_strategy
    if strategy != "fsdp" or parallel.fsdp_version != 2:
        raise InputError("strategy", f"the distributed simulator runs FSDP2 (--strategy fsdp --fsdp-version 2) only "
                                     f"(got {strategy}, fsdp_version {parallel.fsdp_version}); plan others analytically")
    if parallel.tensor_parallel != 1:
        raise InputError("tensor_parallel", "the distributed simulator runs data-parallel FSDP2 only (T = 1)")
    if parallel.offload != "none":
        raise InputError("offload", "the distributed simulator runs FSDP2 without CPU offload only")
    if parallel.fsdp_wrap not in (None, "decoder-layer"):
        raise InputError("fsdp_wrap", "the distributed simulator makes decoder layers the units (wrap policies: "
                                      f"{', '.join(WRAP_POLICIES)}); LoRA layers as their own units are not simulated")
    if run.method not in SUPPORTED_METHODS:
        raise InputError("method", f"the distributed simulator trains {' or '.join(SUPPORTED_METHODS)} on a 16-bit "
                                   f"or fp32 base (got {run.method}); plan it analytically")
    if model_spec.is_moe:
        raise InputError("model", "the distributed simulator runs dense models only")


@contextlib.contextmanager
def layer_positions(tracker, hf_model):
    """Split forward and layer_backward at every decoder layer into `phase@first`, `@middle`,
    `@last` (and `forward@head` from the final norm on): the engine extrapolates each part on its
    own and a phase's peak is the largest part's (`engine._fold_positions`).

    Why: under FSDP2 a phase's peak moves with depth. In forward, layer 1's copy-out holds the
    previous unit's flat all-gather output beside its own (2 x root + 2 x layer under one root
    unit), a later layer three layer-sized buffers beside the checkpoints stored so far: at 3 and 4
    layers the first moment is the larger, at 32 the last (Llama-2 7B, 4 ranks), and one line
    through 3 and 4 layers would follow the wrong moment. Each moment alone is linear in depth.
    A layer's backward starts when its output's gradient exists (a tensor hook, as the engine
    finds the start of layer_backward); recomputation under checkpointing does not move phases."""
    layers = list(decoder_layers(hf_model))
    last = len(layers) - 1

    def position(index: int) -> str:
        return "first" if index == 0 else ("last" if index == last else "middle")

    def in_forward() -> bool:
        return tracker.phase is not None and tracker.phase.startswith("forward")

    def entering(index: int):
        def hook(module, args):
            if in_forward():
                tracker.start_phase(f"forward@{position(index)}")
        return hook

    def leaving(index: int):
        def hook(module, args, output):
            if not in_forward():
                return
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.requires_grad:
                hidden.register_hook(lambda grad: tracker.start_phase(f"layer_backward@{position(index)}"))
        return hook

    def head(module, args):
        if in_forward():
            tracker.start_phase("forward@head")

    handles = [hf_model.model.norm.register_forward_pre_hook(head)]
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(entering(index)))
        handles.append(layer.register_forward_hook(leaving(index)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def fake_process_group(rank: int, world_size: int):
    """torch.distributed initialised as `rank` of `world_size` on the fake backend; yields a 1-D cpu mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("torch.distributed is already initialised in this process")
    dist.init_process_group("fake", rank=rank, world_size=world_size, store=FakeStore())
    try:
        yield init_device_mesh("cpu", (world_size,))
    finally:
        dist.destroy_process_group()


class Fsdp2Wrapper:
    """`fully_shard` as accelerate 1.16 applies it, and the tracker hooks for FSDP2's own buffers."""

    # Under FSDP2 the first two layers are special in backward (the last ones to run: no decoder
    # layer left to prefetch, the embedding unit's all-gather instead): layer_backward grows by the
    # same bytes per layer only from 3 layers on (tiny Llama, 4 ranks: +3.05 MB from 2 to 3 layers,
    # then +2.82 MB per layer), so the engine extrapolates from 3 and 4 layers.
    first_linear_layers = 3

    def __init__(self, mesh, run, dtypes, wrap_policy: str = "accelerate"):
        if wrap_policy not in WRAP_POLICIES:
            raise InputError("wrap_policy", f"one of {', '.join(WRAP_POLICIES)} (got {wrap_policy})")
        self.wrap_policy = wrap_policy
        self.mesh = mesh
        self.run = run
        self.dtypes = dtypes

    def mixed_precision(self):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        compute = TORCH_DTYPES[self.dtypes.compute]
        if compute == torch.float32:
            return MixedPrecisionPolicy()
        return MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=compute)

    def wrap(self, hf_model) -> None:
        from torch.distributed.fsdp import fully_shard

        kwargs = {"mesh": self.mesh, "mp_policy": self.mixed_precision(), "reshard_after_forward": True}
        packed = {p for p in hf_model.parameters() if not p.is_floating_point() and not p.requires_grad}
        if packed:
            kwargs["ignored_params"] = packed
        if self.wrap_policy != "accelerate-peft":
            for layer in decoder_layers(hf_model):
                fully_shard(layer, **kwargs)
        if self.wrap_policy.startswith("accelerate"):
            embed, head = hf_model.get_input_embeddings(), hf_model.get_output_embeddings()
            tied = embed.weight is head.weight
            if not tied:
                fully_shard(embed, **kwargs)
            final_norm = hf_model.model.norm
            tail = [final_norm, embed, head] if tied else [final_norm, head]
            fully_shard(tail, **{**kwargs, "reshard_after_forward": False})
        fully_shard(hf_model, **{name: value for name, value in kwargs.items() if name != "reshard_after_forward"})
        # The root's lazy init (normally at the first forward) re-pads a rank's uneven shards when
        # the local tensor's data_ptr differs from the padded one's (`FSDPParam.reset_sharded_param`):
        # always on fake tensors (data_ptr 0), never on a GPU. Run it now, before the step is counted.
        hf_model._get_fsdp_state()._lazy_init()
        self.hf_model = hf_model

    @contextlib.contextmanager
    def watch(self, tracker):
        """Count FSDP2's storage resizes and name its buffers while the step runs."""
        import torch.distributed.fsdp._fully_shard._fsdp_param as fsdp_param
        from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

        def resizing(original):
            def resize(tensor):
                original(tensor)
                tracker.resized(tensor)
            return resize

        def in_category(category, original):
            @functools.wraps(original)
            def method(*args, **kwargs):
                previous, tracker.category = tracker.category, category
                try:
                    return original(*args, **kwargs)
                finally:
                    tracker.category = previous
            return method

        def gathering(original):
            """Name every unsharded parameter's gradient when autograd stores it (its unit's
            reduce-scatter frees it; the tied embedding's is stored once and accumulated into)."""
            @functools.wraps(original)
            def method(group, *args, **kwargs):
                result = in_category("gathered_parameters", original)(group, *args, **kwargs)
                for fsdp_param in group.fsdp_params:
                    unsharded = getattr(fsdp_param, "_unsharded_param", None)
                    if unsharded is not None and unsharded.requires_grad and unsharded not in named_grads:
                        named_grads.add(unsharded)
                        unsharded.register_post_accumulate_grad_hook(
                            lambda param: tracker.recategorize(param.grad, "unsharded_gradients"))
                return result
            return method

        named_grads = set()
        patches = [
            (fsdp_param, "alloc_storage", resizing(fsdp_param.alloc_storage)),
            (fsdp_param, "free_storage", resizing(fsdp_param.free_storage)),
            (FSDPParamGroup, "unshard", in_category("gathered_parameters", FSDPParamGroup.unshard)),
            (FSDPParamGroup, "wait_for_unshard", gathering(FSDPParamGroup.wait_for_unshard)),
            (FSDPParamGroup, "post_backward", in_category("gradient_reduce", FSDPParamGroup.post_backward)),
        ]
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        try:
            with layer_positions(tracker, self.hf_model):
                yield
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)
