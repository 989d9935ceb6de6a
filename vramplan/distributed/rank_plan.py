"""`cluster_plan`: what every rank of a multi-GPU run holds, phase by phase, and its node's host RAM.

One rank's terms start from the single-GPU terms of the rank's model slice (tensor_parallel.py)
at the rank's micro batch, planned in the wrapper's precision (DeepSpeed: the 16-bit module,
deepspeed_states.py). Then, by strategy:
- the parameter, gradient and optimizer components are divided over the shard group (shares.py),
  or for ZeRO replaced by DeepSpeed's own model states (deepspeed_states.py);
- FSDP and ZeRO-3 add the parameters gathered whole while a unit computes (units.py) and drop
  autocast's weight copies (the gathered parameters are already in the compute dtype);
- every strategy adds its communication buffers, and NCCL's buffers outside the allocator (buffers.py);
- offloaded tensors leave the GPU for the host side (host.py).
Every rank of a data-parallel, FSDP, ZeRO or tensor-parallel group holds the same bytes (shards
are padded to one size), so the plan has one rank role; rank 0's extra duty is the host's loading
spike, which the host side counts.
"""
from __future__ import annotations

from dataclasses import dataclass

from vramplan.distributed import buffers, deepspeed_states, host, shares, units
from vramplan.distributed.tensor_parallel import tensor_parallel_slice
from vramplan.errors import InputError
from vramplan.memory import lora, parameters
from vramplan.memory.dtypes import BNB_FORMATS, FLOAT_FORMATS, resolve_dtypes
from vramplan.memory.plan import base_weight_terms, paged_optimizer_bytes, phase_terms, trainable_groups
from vramplan.memory.terms import total
from vramplan.specs import GPUSpec, ModelSpec, RunConfig
from vramplan.specs.cluster import ClusterPlan, RankPlan
from vramplan.specs.parallel import FSDP_STRATEGIES, ZERO_STRATEGIES, ParallelConfig, resolved_fsdp_wrap

_AUTOCAST_COPIES = ("autocast weight copies", "one layer's autocast weight copies")
_SHARDABLE_QUANTIZED = frozenset({"nf4", "fp4"})


@dataclass(frozen=True)
class RankTerms:
    """One rank's terms by phase ({phase: {component: [Term]}}), what it offloads to the host
    ({host component: [Term]}), its NCCL buffers and the dtypes and model slice they were planned with."""

    phases: dict
    host_per_rank: dict
    nccl_terms: list
    dtypes: object
    rank_model: ModelSpec
    rank_run: RunConfig
    trainable_per_rank: int
    paged_bytes: int


def rank_terms(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig) -> RankTerms:
    """The terms one rank holds in every phase (module docstring)."""
    strategy = parallel.resolved_strategy
    rank_model = tensor_parallel_slice(model, parallel.tensor_parallel)
    rank_run = wrapper_run(run, strategy)
    dtypes = resolve_dtypes(rank_run, gpu, rank_model)
    check_supported(model, run, parallel, dtypes)
    phases = phase_terms(rank_model, gpu, rank_run, dtypes)
    groups = trainable_groups(rank_model, rank_run, rank_run.lora_rank, dtypes.moe_experts)
    host_per_rank: dict[str, list] = {}
    sizes = units.unit_sizes(rank_model, rank_run, dtypes, base_weight_terms) if run.trains else None
    whole_unit_grads = fsdp1_whole_unit_gradients(run, parallel, dtypes)
    if whole_unit_grads and sizes is not None:
        sizes = units.with_whole_unit_gradients(sizes, dtypes)

    if strategy in ZERO_STRATEGIES:
        phases, host_per_rank = deepspeed_states.rank_model_state_terms(
            phases, groups, rank_run, parallel, _persistent_split(rank_model, parallel, dtypes.moe_experts), dtypes.compute)
    else:
        phases = {phase: {name: shares.sharded_terms(items, shares.component_divisor(name, parallel), _SHARD_SOURCE)
                          for name, items in comps.items()} for phase, comps in phases.items()}
        if parallel.offload == "params":
            phases, host_per_rank = _fsdp_offload(phases)
    grad_terms = phases.get("optimizer", {}).get("gradients", [])
    fsdp2_layers = (strategy in FSDP_STRATEGIES and parallel.fsdp_version == 2 and strategy != "fsdp-grad-op"
                    and sizes is not None)
    if strategy in FSDP_STRATEGIES and run.trains:
        phases = _computed_in_gathered_precision(phases, rank_model, gpu, run, dtypes,
                                                 accumulate_shards=not fsdp2_layers)
    gathered = {}
    single_unit = fsdp2_layers and resolved_fsdp_wrap(parallel, run) == "decoder-layer+lora"
    if single_unit:
        gathered = {phase: [] for phase in phases}
    elif sizes is not None and strategy in FSDP_STRATEGIES:
        gathered = units.fsdp_gathered_terms(sizes, rank_model, parallel, dtypes)
    elif sizes is not None and strategy == "zero3":
        gathered = units.zero3_gathered_terms(sizes, rank_model, parallel, dtypes)
    comm = {}
    if run.trains and parallel.data_parallel > 1:
        comm = buffers.bucket_terms(parallel, rank_model, dtypes, grad_terms, sizes)
    if whole_unit_grads and sizes is not None:
        flat = units.flat_gradient_shard_terms(sizes, rank_model, parallel, dtypes)
        for phase in ("backward_end", "optimizer"):
            if phase in phases:
                phases[phase]["gradients"] = list(phases[phase].get("gradients", [])) + flat
    for phase, comps in phases.items():
        if gathered:
            comps["activations"] = [item for item in comps.get("activations", []) if item.name not in _AUTOCAST_COPIES]
            comps["gathered_parameters"] = list(gathered.get(phase, []))
        if comm.get(phase):
            comps["comm_buckets"] = list(comm[phase])
    if fsdp2_layers and resolved_fsdp_wrap(parallel, run) == "decoder-layer":
        phases = _fsdp2_moments(phases, sizes, rank_model, gpu, run, dtypes)
    if single_unit:
        phases = units.choose_moments(phases, units.fsdp2_single_unit_moments(sizes, rank_model))
    divisor = max(1, shares.component_divisor("optimizer_state", parallel))
    return RankTerms(phases=phases, host_per_rank=host_per_rank, nccl_terms=buffers.nccl_buffer_terms(parallel, gpu),
                     dtypes=dtypes, rank_model=rank_model, rank_run=rank_run,
                     trainable_per_rank=sum(g.numel * g.count for g in groups) // divisor,
                     paged_bytes=int(paged_optimizer_bytes(rank_model, rank_run, dtypes)) // divisor)


def rank_phase_components(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig) -> dict:
    """{phase: {component: bytes}} of one rank, every phase (not only the peak)."""
    return {phase: {name: int(total(items)) for name, items in comps.items()}
            for phase, comps in rank_terms(model, gpu, run, parallel).phases.items()}


def cluster_plan(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, *,
                 margin_bytes: int = 0, host_ram_bytes: int | None = None) -> ClusterPlan:
    """The per-rank plan and the node's host side of a multi-GPU run (module docstring)."""
    from vramplan.estimate import breakdown_from_terms

    terms = rank_terms(model, gpu, run, parallel)
    breakdown = breakdown_from_terms(
        model, gpu, run, terms.dtypes, terms.phases, margin_bytes=margin_bytes,
        nccl_buffers_bytes=int(total(terms.nccl_terms)), trainable_parameters=_trainable_parameters(model, run, terms.dtypes),
        paged_bytes=terms.paged_bytes, extra_notes=tuple(rank_notes(model, run, parallel, terms.dtypes)),
        nccl_terms=tuple(terms.nccl_terms))
    host_side = host.host_memory(parallel, model, run, terms.host_per_rank, host_ram_bytes, terms.trainable_per_rank)
    return ClusterPlan(strategy=parallel.resolved_strategy, nodes=parallel.nodes, world_size=parallel.world_size,
                       ranks=rank_roles(parallel, breakdown, host_side), host=host_side)


RANK0_LOADS = "reads the checkpoint, broadcasts it"


def rank_roles(parallel: ParallelConfig, breakdown, host_side) -> tuple[RankPlan, ...]:
    """Every rank holds the same GPU bytes; when only rank 0 reads the checkpoint into host RAM
    (host.loading_terms), rank 0 is its own role with that duty."""
    spike = host_side.terms.get("loading_spike", ())
    rank0_loads = any("rank 0 alone" in item["name"] for item in spike)
    everyone = tuple(range(parallel.world_size))
    if not rank0_loads or parallel.world_size == 1:
        return (RankPlan(ranks=everyone, breakdown=breakdown),)
    return (RankPlan(ranks=(0,), breakdown=breakdown, duty=RANK0_LOADS), RankPlan(ranks=everyone[1:], breakdown=breakdown))


_SHARD_SOURCE = "vramplan.distributed.shares (strategy table)"


def _gathered_run(run: RunConfig) -> RunConfig:
    """The run as it computes once FSDP has gathered its parameters in the compute dtype (MixedPrecision
    param_dtype): a mixed-precision full fine-tune computes as a pure 16-bit one - no autocast copies,
    a 16-bit residual stream, no lm_head cast (vramplan.simulate.distributed: fp32 layer-input
    checkpoints and the lm_head cast do not exist under FSDP2)."""
    return run.model_copy(update={"full_precision": "pure"}) if run.method == "full" else run


def _computed_in_gathered_precision(phases: dict, rank_model, gpu, run, dtypes, accumulate_shards: bool) -> dict:
    """Activations and logits from the gathered-precision run; parameters, gradients and state as stored.
    The lm_head gradient is the tail unit's unsharded gradient (units.py), not an fp32 one beside the shards."""
    gathered_run = _gathered_run(run)
    if gathered_run is run:
        return phases
    computed = phase_terms(rank_model, gpu, gathered_run, resolve_dtypes(gathered_run, gpu, rank_model))
    out = {}
    for phase, comps in phases.items():
        comps = dict(comps)
        for name in ("activations", "logits_loss"):
            if name in computed.get(phase, {}):
                comps[name] = computed[phase][name]
        if accumulate_shards and phase == "layer_backward" and "backward_end" in phases:  # shards accumulate
            comps["gradients"] = list(phases["backward_end"].get("gradients", []))
        out[phase] = comps
    return out


def _fsdp2_moments(phases: dict, sizes, rank_model, gpu, run, dtypes) -> dict:
    """FSDP2 with decoder-layer units: each phase's larger moment (units.fsdp2_moment_terms)."""
    from vramplan.memory import activations, logits
    from vramplan.memory.terms import term

    gathered_run = _gathered_run(run)
    gathered_dtypes = resolve_dtypes(gathered_run, gpu, rank_model) if gathered_run is not run else dtypes
    forward_logits, backward_logits = logits.logits_loss_terms(rank_model, gathered_run, gathered_dtypes,
                                                               run.micro_batch_size, run.seq_len)
    moments = units.fsdp2_moment_terms(sizes, rank_model, run, dtypes, run.micro_batch_size, run.seq_len,
                                       forward_logits, backward_logits)
    incoming = activations.incoming_gradient_per_token(rank_model, gathered_dtypes)
    incoming_terms = [term("the first layer's incoming gradient", "B/token x b x s",
                           (("B/token", incoming), ("b", run.micro_batch_size), ("s", run.seq_len)),
                           "activations.incoming_gradient_per_token")] if incoming else []
    end = phases.get("backward_end", {})
    # every gradient shard but the embedding's, which is reduced after the embedding's backward; no
    # partial gradients of a tied weight beside the shards (they are unsharded, units.py)
    shards = [item for item in phases.get("optimizer", {}).get("gradients", [])
              if not item.name.startswith("embed_tokens.weight")]
    first_layer = {"activations": list(end.get("activations", [])), "gradients": shards, "incoming": incoming_terms}
    phases = units.fsdp2_phase_terms(phases, moments, first_layer)
    if "backward_end" in phases:
        phases["backward_end"]["gradients"] = shards
    layer_reduce = phases.get("layer_backward", {}).get("comm_buckets", [])[:1]
    for phase in ("layer_backward", "backward_end"):  # the first layer's reduce-scatter input still in flight
        if phase in phases and phases[phase].get("comm_buckets"):
            phases[phase]["comm_buckets"] = list(layer_reduce)
    return phases


def wrapper_run(run: RunConfig, strategy: str) -> RunConfig:
    """The run as the wrapper trains it. DeepSpeed casts the whole module to the 16-bit compute dtype
    (runtime/engine.py `_configure_distributed_model`), so under ZeRO full fine-tuning is 'pure' on
    the module (the fp32 master lives in the optimizer), LoRA weights are 16-bit and k-bit
    preparation's fp32 casts are undone; torch's wrappers keep the run as given."""
    if strategy not in ZERO_STRATEGIES:
        return run
    update = {"kbit_prep": False}
    if run.method == "full":
        update["full_precision"] = "pure"
    if run.uses_lora:
        update["lora_dtype"] = run.compute_dtype or "bf16"
    return run.model_copy(update=update)


def fsdp1_whole_unit_gradients(run, parallel: ParallelConfig, dtypes) -> bool:
    """FSDP1 with LoRA inside decoder-layer units: one flat parameter mixes frozen and trainable
    tensors, which needs use_orig_params=True, and then its gradient spans the whole unit, frozen
    parts included (torch/distributed/fsdp/_flat_param.py:822-832, torch 2.13)."""
    return (run.uses_lora and parallel.resolved_strategy in FSDP_STRATEGIES and parallel.fsdp_version == 1
            and resolved_fsdp_wrap(parallel, run) == "decoder-layer")


def check_supported(model, run, parallel: ParallelConfig, dtypes) -> None:
    """Refuse what the wrappers cannot run, with the way out."""
    strategy = parallel.resolved_strategy
    if not run.trains and (strategy in FSDP_STRATEGIES or strategy in ZERO_STRATEGIES):
        raise InputError("strategy", f"{strategy} shards training state; inference splits a model with "
                                     "--tensor-parallel (ddp: independent replicas)")
    shards_weights = strategy in FSDP_STRATEGIES or strategy == "zero3"
    fmt = dtypes.weight_format
    if shards_weights and fmt not in FLOAT_FORMATS and fmt not in _SHARDABLE_QUANTIZED:
        raise InputError("weight_format", f"{strategy} shards float weights and bitsandbytes nf4/fp4 "
                                          f"(bnb_4bit_quant_storage); a {fmt} base cannot be sharded: use ddp, zero1 or zero2")
    if parallel.tensor_parallel > 1 and fmt in BNB_FORMATS and run.trains:
        raise InputError("tensor_parallel", "tensor parallelism with bitsandbytes weights is not supported by "
                                            "transformers' tp_plan: use a 16-bit base, or FSDP for QLoRA")
    if fsdp1_whole_unit_gradients(run, parallel, dtypes) and dtypes.lora != (
            dtypes.compute if dtypes.base_quantized else dtypes.float_weights):
        raise InputError("fsdp_wrap", f"FSDP1 flattens a decoder-layer unit into one tensor of one dtype: {dtypes.lora} "
                                      "LoRA weights beside the base need decoder-layer+lora (LoRA layers their own units), "
                                      "--lora-dtype of the base, or --fsdp-version 2")
    if parallel.tensor_parallel > 1 and model.is_moe:
        raise InputError("tensor_parallel", "tensor-parallel MoE experts are not modelled; plan a dense model")


def _trainable_parameters(model, run, dtypes) -> int:
    if run.method == "full":
        return parameters.parameter_count(model)
    if run.uses_lora:
        return int(lora.lora_parameter_count(model, run.lora_targets, run.lora_rank, dtypes.moe_experts))
    return 0


def _persistent_split(model, parallel: ParallelConfig, moe_experts: str):
    """(whole, partitioned) terms under ZeRO-3's stage3_param_persistence_threshold: a term whose
    per-tensor `elements` factor is under the threshold stays whole on every rank."""
    from vramplan.specs.parallel import resolved_bucket

    threshold = resolved_bucket(parallel, "stage3_param_persistence_threshold", model.hidden_size)

    def split(items):
        whole, partitioned = [], []
        for item in items:
            elements = dict(item.factors).get("elements")
            (whole if elements is not None and elements < threshold else partitioned).append(item)
        return whole, partitioned
    return split


def _fsdp_offload(phases: dict) -> tuple[dict, dict]:
    """CPUOffload(offload_params=True): parameter shards, gradient shards and the optimizer (its state
    and step) live in host memory; the GPU keeps what is gathered and computed."""
    moved_params = shares.PARAMETER_COMPONENTS
    moved_state = ("gradients", *shares.OPTIMIZER_COMPONENTS)
    reference = phases.get("optimizer") or next(iter(phases.values()))
    host_per_rank = {"offloaded_parameters": [item for name in moved_params for item in reference.get(name, [])],
                     "offloaded_optimizer_state": [item for name in ("gradients", "optimizer_state")
                                                   for item in reference.get(name, [])]}
    out = {}
    for phase, comps in phases.items():
        out[phase] = {name: ([] if name in moved_params or name in moved_state else items) for name, items in comps.items()}
    return out, host_per_rank


def rank_notes(model, run, parallel: ParallelConfig, dtypes):
    """What the per-rank plan assumed, in the words a user checks against their launcher."""
    strategy = parallel.resolved_strategy
    if strategy in FSDP_STRATEGIES:
        yield (f"FSDP{parallel.fsdp_version} over {parallel.shard_count} ranks, one unit per decoder layer "
               f"(mixed precision: parameters gathered in {dtypes.compute}), backward prefetch "
               f"{'on' if parallel.resolved_backward_prefetch else 'off'}")
        if (parallel.fsdp_version == 2 and strategy != "fsdp-grad-op"
                and resolved_fsdp_wrap(parallel, run) == "decoder-layer+lora"):
            yield ("FSDP2 under transformers' Trainer with a peft model: accelerate 1.16 does not apply peft's wrap "
                   "policy, so the whole model is one unit, gathered whole from forward to backward; with decoder-layer "
                   "units (--fsdp-wrap decoder-layer: wrap the model yourself, e.g. fully_shard per layer) it shards")
        if fsdp1_whole_unit_gradients(run, parallel, dtypes):
            yield ("FSDP1 with LoRA inside decoder-layer units (use_orig_params): each unit's gradient spans its frozen "
                   "weights too; --fsdp-wrap decoder-layer+lora gives LoRA layers their own units")
    if strategy in ZERO_STRATEGIES:
        yield (f"DeepSpeed ZeRO-{strategy[-1]} over {parallel.shard_count} ranks: the module in {dtypes.compute}, "
               "fp32 master weights and optimizer state partitioned")
    if dtypes.weight_format in _SHARDABLE_QUANTIZED and (strategy in FSDP_STRATEGIES or strategy == "zero3"):
        yield ("4-bit codes sharded as bnb_4bit_quant_storage=" + dtypes.compute +
               "; the quantization state (absmax) stays whole on every rank")
    if parallel.tensor_parallel > 1:
        yield (f"tensor parallel over {parallel.tensor_parallel} GPUs: heads, MLP and vocabulary split, norms and the "
               "residual stream whole (Korthikanti et al. 2022, no sequence parallelism)")
    if parallel.data_parallel > 1 and run.trains:
        yield (f"each of the {parallel.data_parallel} data-parallel ranks runs micro batch {run.micro_batch_size}: "
               f"global batch {run.micro_batch_size * run.grad_accum_steps * parallel.data_parallel}")
