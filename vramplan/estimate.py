"""The library entry points: a plan for one (model, GPU, run), and the same plan per rank (`plan_ranks`)."""
from __future__ import annotations

from pydantic import ValidationError

from vramplan.errors import InputError, from_validation_error
from vramplan.memory import lora, parameters
from vramplan.memory.activations import effective_attention
from vramplan.memory.dtypes import BNB_FORMATS, resolve_dtypes
from vramplan.memory.overhead import allocator_reserve_bytes, required_bytes
from vramplan.memory.plan import paged_optimizer_bytes, phase_terms, phase_totals
from vramplan.memory.terms import as_dict, total
from vramplan.optimizers import get_optimizer
from vramplan.reasons import fused_experts_note, leading_reason
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.cluster import ClusterPlan
from vramplan.specs.parallel import ParallelConfig
from vramplan.specs.run import ALL_LINEAR
from vramplan.stack.notes import stack_data, stack_notes


def make_run(**fields) -> RunConfig:
    """RunConfig from keyword fields; a bad field is an InputError naming it."""
    try:
        return RunConfig(**fields)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def make_parallel(**fields) -> ParallelConfig:
    """ParallelConfig from keyword fields; a bad field is an InputError naming it."""
    try:
        return ParallelConfig(**fields)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def plan(model: ModelSpec, gpu: GPUSpec, run: RunConfig, *, margin_bytes: int = 0) -> Breakdown:
    """The full Breakdown for resolved specs; it fits when required + `margin_bytes` <= capacity
    and the GPU can run the plan's kernels at all (`blocked_by` says why not)."""
    if margin_bytes < 0:
        raise InputError("margin", f"must be zero or more bytes (got {margin_bytes})")
    dtypes = resolve_dtypes(run, gpu, model)
    return breakdown_from_terms(model, gpu, run, dtypes, phase_terms(model, gpu, run, dtypes), margin_bytes=margin_bytes)


def breakdown_from_terms(model: ModelSpec, gpu: GPUSpec, run: RunConfig, dtypes, terms: dict, *, margin_bytes: int = 0,
                         nccl_buffers_bytes: int = 0, trainable_parameters: int | None = None,
                         paged_bytes: int | None = None, extra_notes: tuple[str, ...] = (),
                         nccl_terms: tuple = ()) -> Breakdown:
    """The Breakdown of one device from its phase terms ({phase: {component: [Term]}}): the peak phase,
    the verdict (required = peak + reserve + CUDA context + NCCL buffers) and the reasons and notes.
    `plan` passes one GPU's terms; `vramplan.distributed` passes one rank's, and its NCCL buffers'
    terms (`nccl_terms`, kept under `terms["nccl_buffers"]`)."""
    phases = {phase: {name: total(items) for name, items in parts.items()} for phase, parts in terms.items()}
    totals = {name: int(phase_total) for name, phase_total in phase_totals(phases).items()}
    peak_phase = max(totals, key=totals.get)
    peak = totals[peak_phase]
    reserve = int(allocator_reserve_bytes(peak, run.fragmentation))
    required = required_bytes(peak, run, gpu) + nccl_buffers_bytes
    capacity = gpu.capacity_bytes
    if trainable_parameters is None:
        trainable_parameters = 0
        if run.method == "full":
            trainable_parameters = parameters.parameter_count(model)
        elif run.uses_lora:
            trainable_parameters = int(lora.lora_parameter_count(model, run.lora_targets, run.lora_rank,
                                                                 dtypes.moe_experts))
    paged = int(paged_optimizer_bytes(model, run, dtypes)) if paged_bytes is None else paged_bytes
    headroom = capacity - required - margin_bytes
    blocked = blocked_by(gpu, run, dtypes)
    reason = leading_reason(model, gpu, run, dtypes, phases[peak_phase], required, capacity - margin_bytes)
    notes = (*_notes(model, gpu, run, dtypes, required, paged, capacity), *extra_notes)
    return Breakdown(
        model=model.name,
        gpu=gpu.name,
        run=run,
        compute_dtype=dtypes.compute,
        weight_format=dtypes.weight_format,
        total_parameters=parameters.parameter_count(model),
        trainable_parameters=trainable_parameters,
        **{name: int(value) for name, value in phases[peak_phase].items()},
        peak_phase=peak_phase,
        terms={name: tuple(as_dict(item) for item in items) for name, items in terms[peak_phase].items()}
        | ({"nccl_buffers": tuple(as_dict(item) for item in nccl_terms)} if nccl_terms else {}),
        phase_peaks=totals,
        peak_allocated_bytes=peak,
        allocator_reserve_bytes=reserve,
        cuda_context_bytes=gpu.cuda_context_bytes,
        nccl_buffers_bytes=nccl_buffers_bytes,
        paged_optimizer_bytes=paged,
        required_bytes=required,
        capacity_bytes=capacity,
        margin_bytes=margin_bytes,
        headroom_bytes=headroom,
        fits=headroom >= 0 and not blocked,
        blocked_by=blocked,
        reason=reason,
        warnings=tuple(_warnings(model, gpu, run, headroom, capacity)),
        notes=tuple(n for n in notes if n not in reason),
        stack=stack_data(run, dtypes.stack),
    )


def plan_ranks(model: ModelSpec, gpu: GPUSpec, run: RunConfig, *, parallel: ParallelConfig | None = None,
               margin_bytes: int = 0, host_ram_bytes: int | None = None) -> ClusterPlan:
    """The plan per rank role plus the host side of one node. On one GPU (`parallel` None or
    `ParallelConfig()`) rank 0 holds exactly `plan(...)`; otherwise `vramplan.distributed.rank_plan`."""
    if host_ram_bytes is not None and host_ram_bytes < 0:
        raise InputError("host_ram", f"must be zero or more bytes (got {host_ram_bytes})")
    if parallel is None or parallel.is_single:
        return ClusterPlan.single(plan(model, gpu, run, margin_bytes=margin_bytes), host_ram_bytes=host_ram_bytes)
    from vramplan.distributed.rank_plan import cluster_plan

    return cluster_plan(model, gpu, run, parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)


LOW_HEADROOM_FRACTION = 0.05


def blocked_by(gpu, run, dtypes) -> str:
    """Why this GPU cannot run the plan at all, or "": bitsandbytes' 4-/8-bit kernels and its
    8-bit/paged optimizers are CUDA (and ROCm) builds; Apple silicon has neither."""
    if gpu.vendor != "apple":
        return ""
    uses = []
    if dtypes.weight_format in BNB_FORMATS:
        uses.append(f"{dtypes.weight_format} weights")
    if run.trains and get_optimizer(run.optimizer).uses_bitsandbytes:
        uses.append(f"the {run.optimizer} optimizer")
    if not uses:
        return ""
    return (f"bitsandbytes ({' and '.join(uses)}) is not available on {gpu.name} (no CUDA): "
            "use --method lora with a 16-bit base and --optimizer adamw, or a CUDA GPU")


def _warnings(model, gpu, run, headroom, capacity):
    tokens = run.seq_len + (0 if run.trains else run.max_new_tokens)
    if tokens > model.max_position_embeddings:
        yield (f"{tokens} tokens exceed {model.name}'s context window of {model.max_position_embeddings} "
               "(max_position_embeddings); longer needs RoPE scaling")
    if run.attention == "flash_attention_2" and _no_flash_attention_2(gpu):
        yield (f"flash_attention_2 needs an Ampere or newer NVIDIA GPU (compute capability >= 8.0); "
               f"{gpu.name} cannot run it: use --attention sdpa")
    if 0 <= headroom < LOW_HEADROOM_FRACTION * capacity:
        yield (f"headroom {headroom / 2**30:.2f} GiB is under {LOW_HEADROOM_FRACTION:.0%} of capacity: "
               "another process, a longer sample or a library update can tip it over (--margin keeps room free)")


def _no_flash_attention_2(gpu) -> bool:
    """flash-attn 2 builds for sm80+ only (Turing, Volta and older cannot); Apple has no CUDA."""
    if gpu.vendor == "apple":
        return True
    if gpu.vendor != "nvidia" or not gpu.compute_capability:
        return False
    major = gpu.compute_capability.split(".")[0]
    return major.isdigit() and int(major) < 8


def _notes(model, gpu, run, dtypes, required, paged, capacity):
    if gpu.size_reading:
        yield gpu.size_reading
    yield from model.notes  # what the model's source assumed (unknown architecture fields)
    if run.compute_dtype is None and not gpu.bf16:
        yield f"{gpu.name} has no bf16: computing in fp16 (set --compute-dtype to override)"
    if paged:
        where = "fits beside the rest" if required + paged <= capacity else "will spill to host memory (slower steps)"
        yield f"paged optimizer state ({paged / 2**30:.2f} GiB, CUDA managed memory, not in max_memory_allocated) {where}"
    if dtypes.weight_format.startswith("gguf-"):
        yield "GGUF sizes are llama.cpp's storage; transformers dequantizes GGUF to float when it loads it"
    if run.trains and effective_attention(model, run) != run.attention:
        yield f"{model.name} has no SDPA support in transformers (soft-capping): planned with eager attention"
    if model.stored_weight_format and run.weight_format is None and dtypes.weight_format == model.stored_weight_format:
        yield f"weight format {dtypes.weight_format} taken from the checkpoint"
    if model.checkpoint_parameters:
        counted = parameters.parameter_count(model)
        if abs(model.checkpoint_parameters - counted) > 0.005 * counted:
            yield (f"the checkpoint holds {model.checkpoint_parameters:,} parameters but the architecture "
                   f"gives {counted:,}: check config.json")
    if model.is_moe:
        yield from _moe_notes(model, run, dtypes)
    if gpu.unified_memory:
        yield f"{gpu.name} shares memory with the CPU; capacity is the GPU working-set limit"
    yield from stack_notes(run, dtypes)


def _moe_notes(model, run, dtypes):
    if dtypes.moe_experts == "linear":
        if dtypes.weight_format in BNB_FORMATS and run.moe_experts == "linear":
            yield "MoE planned with transformers 4.x's one nn.Linear per expert (bitsandbytes quantizes those)"
        elif dtypes.base_quantized:
            yield f"MoE experts planned as quantized by the {dtypes.weight_format} runtime, one tensor per expert"
        return
    if dtypes.weight_format in BNB_FORMATS:
        yield fused_experts_note(model, dtypes)
    if run.uses_lora and ALL_LINEAR in run.lora_targets:
        yield ("LoRA all-linear planned on the attention projections only: in transformers >= 5 the MoE experts "
               "and router are not nn.Linear (peft's own target_parameters conversion of them is not modelled)")


def margin_bytes_from(margin) -> int:
    """Bytes of a margin given as an int (bytes) or a size string like "1GiB" (the --gpu size syntax)."""
    if margin is None:
        return 0
    if isinstance(margin, int) and not isinstance(margin, bool):
        if margin < 0:
            raise InputError("margin", f"must be zero or more bytes (got {margin})")
        return margin
    from vramplan.gpus import parse_size

    text = str(margin).strip()
    value = 0 if text in ("0", "") else parse_size(text)
    if value is None:
        raise InputError("margin", f"give a size like 1GiB, 500MiB or 2GB (got {margin!r})")
    return value


def estimate(model: str | ModelSpec = "13b", gpu: str | GPUSpec = "t4", *, margin=None,
             **run_fields) -> Breakdown:
    """Plan a run: `vramplan.estimate(model="13b", gpu="t4", method="qlora", seq_len=1024)`.

    `model` is a catalog name/alias, a config.json or model folder path, a local HF cache
    repo id, or a ModelSpec; `gpu` a profile name, a TOML path, a size like "24GiB", or a
    GPUSpec. `margin` (bytes or a size like "1GiB") is kept free: the run fits only with
    that much to spare. Other keywords are RunConfig fields. Bad input raises InputError.
    """
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model

    model_spec = model if isinstance(model, ModelSpec) else resolve_model(str(model))
    gpu_spec = gpu if isinstance(gpu, GPUSpec) else get_gpu(str(gpu))
    return plan(model_spec, gpu_spec, make_run(**run_fields), margin_bytes=margin_bytes_from(margin))


__all__ = ["InputError", "blocked_by", "estimate", "make_parallel", "make_run", "margin_bytes_from", "plan", "plan_ranks"]
