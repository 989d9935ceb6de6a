"""The library entry points: a plan for one (model, GPU, run)."""
from __future__ import annotations

from pydantic import ValidationError

from vramplan.errors import InputError, from_validation_error
from vramplan.memory import lora, parameters
from vramplan.memory.activations import effective_attention
from vramplan.memory.dtypes import BNB_FORMATS, resolve_dtypes
from vramplan.memory.overhead import allocator_reserve_bytes, required_bytes
from vramplan.memory.plan import paged_optimizer_bytes, phase_terms, phase_totals
from vramplan.memory.terms import as_dict, total
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.run import ALL_LINEAR


def make_run(**fields) -> RunConfig:
    """RunConfig from keyword fields; a bad field is an InputError naming it."""
    try:
        return RunConfig(**fields)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def plan(model: ModelSpec, gpu: GPUSpec, run: RunConfig) -> Breakdown:
    """The full Breakdown for resolved specs."""
    dtypes = resolve_dtypes(run, gpu, model)
    terms = phase_terms(model, gpu, run, dtypes)
    phases = {phase: {name: total(items) for name, items in parts.items()} for phase, parts in terms.items()}
    totals = {name: int(total) for name, total in phase_totals(phases).items()}
    peak_phase = max(totals, key=totals.get)
    peak = totals[peak_phase]
    reserve = int(allocator_reserve_bytes(peak, run.fragmentation))
    required = required_bytes(peak, run, gpu)
    capacity = gpu.capacity_bytes
    trainable = 0
    if run.method == "full":
        trainable = parameters.parameter_count(model)
    elif run.uses_lora:
        trainable = int(lora.lora_parameter_count(model, run.lora_targets, run.lora_rank, dtypes.moe_experts))
    paged = int(paged_optimizer_bytes(model, run, dtypes))
    return Breakdown(
        model=model.name,
        gpu=gpu.name,
        run=run,
        compute_dtype=dtypes.compute,
        weight_format=dtypes.weight_format,
        total_parameters=parameters.parameter_count(model),
        trainable_parameters=trainable,
        **{name: int(value) for name, value in phases[peak_phase].items()},
        peak_phase=peak_phase,
        terms={name: tuple(as_dict(item) for item in items) for name, items in terms[peak_phase].items()},
        phase_peaks=totals,
        peak_allocated_bytes=peak,
        allocator_reserve_bytes=reserve,
        cuda_context_bytes=gpu.cuda_context_bytes,
        paged_optimizer_bytes=paged,
        required_bytes=required,
        capacity_bytes=capacity,
        headroom_bytes=capacity - required,
        fits=required <= capacity,
        notes=tuple(_notes(model, gpu, run, dtypes, required, paged, capacity)),
    )


def _notes(model, gpu, run, dtypes, required, paged, capacity):
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


def _moe_notes(model, run, dtypes):
    if dtypes.moe_experts == "linear":
        if dtypes.weight_format in BNB_FORMATS and run.moe_experts == "linear":
            yield "MoE planned with transformers 4.x's one nn.Linear per expert (bitsandbytes quantizes those)"
        elif dtypes.base_quantized:
            yield f"MoE experts planned as quantized by the {dtypes.weight_format} runtime, one tensor per expert"
        return
    if dtypes.weight_format in BNB_FORMATS:
        fused = sum(g.numel * g.count for g in parameters.fused_expert_groups(model, "fused"))
        yield (f"transformers >= 5 fuses the MoE experts into 3-D parameters, which bitsandbytes does not quantize: "
               f"{fused / 1e9:.1f}B expert and router parameters stay {dtypes.float_weights}; "
               "for transformers 4.x (one nn.Linear per expert) use --moe-experts linear")
    if run.uses_lora and ALL_LINEAR in run.lora_targets:
        yield ("LoRA all-linear planned on the attention projections only: in transformers >= 5 the MoE experts "
               "and router are not nn.Linear (peft's own target_parameters conversion of them is not modelled)")


def estimate(model: str | ModelSpec = "13b", gpu: str | GPUSpec = "t4", **run_fields) -> Breakdown:
    """Plan a run: `vramplan.estimate(model="13b", gpu="t4", method="qlora", seq_len=1024)`.

    `model` is a catalog name/alias, a config.json or model folder path, a local HF cache
    repo id, or a ModelSpec; `gpu` a profile name, a TOML path, a size like "24GiB", or a
    GPUSpec. Other keywords are RunConfig fields. Bad input raises InputError.
    """
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model

    model_spec = model if isinstance(model, ModelSpec) else resolve_model(str(model))
    gpu_spec = gpu if isinstance(gpu, GPUSpec) else get_gpu(str(gpu))
    return plan(model_spec, gpu_spec, make_run(**run_fields))


__all__ = ["InputError", "estimate", "make_run", "plan"]
