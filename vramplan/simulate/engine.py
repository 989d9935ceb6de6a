"""One real training step (or prefill + decode) of the HF architecture on fake tensors.

The step is what the HF Trainer runs after warm-up: optimizer state already exists, gradients
are None (kept when accumulating), forward + loss under `torch.autocast` (CPU autocast in
bf16/fp16 mirrors CUDA's: the ops these decoders use - linear/matmul in the low dtype,
RMSNorm/RoPE/softmax/cross-entropy in fp32 by explicit casts - are on the same cast lists
for both devices), backward outside autocast, `optimizer.step()`, `zero_grad(set_to_none)`.

Phases (as the analytic model names them): forward (model + loss), loss_backward (until the
gradient of the lm_head input exists), layer_backward (the rest of backward, up to all
gradients), optimizer. Inference: generate (prefill with `logits_to_keep=1` into a
StaticCache of seq + max_new_tokens, the fp32 copy of the logits, one decode step).

Scale: the decoder layers are identical, so a model of L layers is simulated with 2 and 3
layers and every phase's peak and live set extrapolated: x(L) = x(2) + (L - 2) (x(3) - x(2)).
Not from 1 and 2: the first layer is special. Its input is the embedding output, which the
model's forward holds anyway (inference: from layer 2 on the caller also holds the layer
input), and which needs no gradient when the embeddings are frozen (so layer 1 saves less);
and models that alternate layer types (Gemma-2: sliding and global attention) build one mask
per type, two from 2 layers on. Extrapolating from 1 and 2 layers counted those once per
layer: +7% on TinyLlama inference at batch 2 x 1024, +190 MiB of masks on Gemma-2 2B.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.simulate import architecture as arch
from vramplan.simulate.hf_build import add_lora, enable_checkpointing, lora_target_names
from vramplan.simulate.optimizers import make_optimizer, state_categories
from vramplan.simulate.tracker import PAGED, AllocationTracker
from vramplan.stack.rules import CURRENT_BEHAVIOUR
from vramplan.torch_nf4.inject import prepare_for_kbit_training

SIMULATED_FORMATS = frozenset({"nf4", "fp4", "fp32", "bf16", "fp16"})


@dataclass(frozen=True)
class SimulationResult:
    """Simulated `max_memory_allocated` of one step, per phase, and the live set at each peak."""

    model: str
    gpu: str
    peak_bytes: int
    peak_phase: str
    phase_peaks: dict[str, int]
    phase_categories: dict[str, dict[str, int]]  # live bytes by category at each phase's peak
    paged_optimizer_bytes: int = 0
    layers_simulated: tuple[int, ...] = ()
    per_layer_bytes: dict[str, int] = field(default_factory=dict)  # phase -> bytes added per layer
    seconds: float = 0.0

    @property
    def categories_at_peak(self) -> dict[str, int]:
        return self.phase_categories[self.peak_phase]


@dataclass
class _Raw:
    phase_peaks: dict[str, int]
    phase_categories: dict[str, dict[str, int]]
    paged: int


def simulate(model_spec, gpu_spec, run, *, wrapper=None) -> SimulationResult:
    """Simulate `run` of `model_spec` on `gpu_spec`; extrapolate from 2 and 3 decoder layers.

    `wrapper` (optional) turns the step into one rank's step of a distributed run: its
    `wrap(hf_model)` runs after the method's preparation (e.g. FSDP2's `fully_shard`), its
    `watch(tracker)` context manager is open around the step and its `first_linear_layers` says
    from how many layers on every phase grows linearly (`vramplan.simulate.distributed`)."""
    started = time.perf_counter()
    dtypes = resolve_dtypes(run, gpu_spec, model_spec)
    _check_supported(model_spec, run, dtypes)
    layers_fn = functools.partial(_simulate_layers, wrapper=wrapper)
    layers = model_spec.num_hidden_layers
    first = 2 if wrapper is None else wrapper.first_linear_layers  # layer 1 is special (see Scale above)
    local = model_spec.sliding_window_layers
    if layers <= first + 1:
        raw, simulated, per_layer = layers_fn(model_spec, gpu_spec, run, dtypes, layers), (layers,), {}
    elif 0 < local < layers:  # local and global layers differ (KV cache, masks): one step of each
        raw, per_layer = _simulate_mixed_layers(model_spec, gpu_spec, run, dtypes, local, layers - local, layers_fn, first)
        simulated = (first, first + 1)
    else:
        one = layers_fn(model_spec, gpu_spec, run, dtypes, first)
        two = layers_fn(model_spec, gpu_spec, run, dtypes, first + 1)
        raw, simulated = _extrapolate(one, two, layers, first), (first, first + 1)
        per_layer = {phase: two.phase_peaks[phase] - one.phase_peaks[phase] for phase in one.phase_peaks}
    raw, per_layer = _fold_positions(raw, per_layer)
    peak_phase = max(raw.phase_peaks, key=raw.phase_peaks.get)
    return SimulationResult(
        model=model_spec.name, gpu=gpu_spec.name, peak_bytes=raw.phase_peaks[peak_phase], peak_phase=peak_phase,
        phase_peaks=raw.phase_peaks, phase_categories=raw.phase_categories, paged_optimizer_bytes=raw.paged,
        layers_simulated=simulated, per_layer_bytes=per_layer, seconds=time.perf_counter() - started)


def _simulate_mixed_layers(model_spec, gpu_spec, run, dtypes, local: int, global_: int, layers_fn, first: int):
    """Sliding-window and global layers (Gemma-2/3) extrapolated separately: from `first` layers
    alternating [local, global, ...] (l0 local and g0 global ones) one step of each,
    x = x(first) + (local - l0) (x(+local) - x(first)) + (global - g0) (x(+global) - x(first)).
    Two and three layers of the default pattern would all be local for Gemma-3 (5 local : 1 global)."""
    base_types = (["sliding_attention", "full_attention"] * first)[:first]
    base_local = base_types.count("sliding_attention")
    base = layers_fn(model_spec, gpu_spec, run, dtypes, first, base_types)
    plus_local = layers_fn(model_spec, gpu_spec, run, dtypes, first + 1, base_types + ["sliding_attention"])
    plus_global = layers_fn(model_spec, gpu_spec, run, dtypes, first + 1, base_types + ["full_attention"])

    def line(a: int, b: int, c: int) -> int:
        return a + (local - base_local) * (b - a) + (global_ - (first - base_local)) * (c - a)

    peaks = {phase: line(base.phase_peaks[phase], plus_local.phase_peaks[phase], plus_global.phase_peaks[phase])
             for phase in base.phase_peaks}
    categories = {}
    for phase, named in base.phase_categories.items():
        names = set(named) | set(plus_local.phase_categories[phase]) | set(plus_global.phase_categories[phase])
        categories[phase] = {name: line(named.get(name, 0), plus_local.phase_categories[phase].get(name, 0),
                                        plus_global.phase_categories[phase].get(name, 0)) for name in sorted(names)}
    per_layer = {phase: plus_local.phase_peaks[phase] - base.phase_peaks[phase] for phase in base.phase_peaks}
    return _Raw(peaks, categories, line(base.paged, plus_local.paged, plus_global.paged)), per_layer


def _fold_positions(raw: _Raw, per_layer: dict[str, int]) -> tuple[_Raw, dict[str, int]]:
    """Parts of a phase (`phase@position`, a wrapper's split: `distributed.layer_positions`) folded
    into the phase: its peak is the largest part's, with that part's live set. Extrapolated part by
    part before this, since each part, not their maximum, grows linearly with depth."""
    if not any("@" in phase for phase in raw.phase_peaks):
        return raw, per_layer
    peaks, categories, slopes = {}, {}, {}
    for part, peak in raw.phase_peaks.items():
        phase = part.split("@")[0]
        if phase not in peaks or peak > peaks[phase]:
            peaks[phase], categories[phase] = peak, raw.phase_categories[part]
            if part in per_layer:
                slopes[phase] = per_layer[part]
    return _Raw(peaks, categories, raw.paged), slopes


def _extrapolate(one: _Raw, two: _Raw, layers: int, first: int = 1) -> _Raw:
    """Extend the line through `first` and `first + 1` layers to `layers`."""
    def line(a: int, b: int) -> int:
        return a + (layers - first) * (b - a)

    peaks = {phase: line(one.phase_peaks[phase], two.phase_peaks[phase]) for phase in one.phase_peaks}
    categories = {}
    for phase in one.phase_categories:
        names = set(one.phase_categories[phase]) | set(two.phase_categories[phase])
        categories[phase] = {name: line(one.phase_categories[phase].get(name, 0), two.phase_categories[phase].get(name, 0))
                             for name in sorted(names)}
    return _Raw(peaks, categories, line(one.paged, two.paged))


def _check_supported(model_spec, run, dtypes) -> None:
    if dtypes.weight_format not in SIMULATED_FORMATS:
        raise InputError("weight_format", f"the simulator runs {', '.join(sorted(SIMULATED_FORMATS))} "
                                          f"(got {dtypes.weight_format}); use the analytic plan")
    if model_spec.is_moe and dtypes.moe_experts != "fused":
        raise InputError("moe_experts", "the simulator builds transformers 5's fused MoE experts only; "
                                        "the 4.x per-expert nn.Linear layout (linear) has the analytic plan only")
    if run.loss_impl != "standard":
        raise InputError("loss_impl", "the simulator runs the standard loss only")
    if dtypes.kv_cache not in arch.TORCH_DTYPES:
        raise InputError("kv_cache_dtype", "the simulator runs bf16/fp16/fp32 KV caches only")
    if dataclasses.replace(dtypes.stack, stack=()) != CURRENT_BEHAVIOUR:
        raise InputError("stack", "the simulator runs the installed libraries' current behaviour (transformers 5, "
                                  "bitsandbytes >= 0.43.2, non-reentrant checkpointing); plan older stacks analytically")


def _simulate_layers(model_spec, gpu_spec, run, dtypes, layers: int, layer_types=None, wrapper=None) -> _Raw:
    with FakeTensorMode(), arch.cuda_like_kernels(), _no_grad_unless(run.trains):
        hf_model = arch.build_model(model_spec, layers, run, dtypes, layer_types)
        prepare(hf_model, model_spec, run, dtypes)
        if wrapper is not None:
            wrapper.wrap(hf_model)
        tracker = AllocationTracker()
        _register_parameters(tracker, hf_model)
        with wrapper.watch(tracker) if wrapper is not None else contextlib.nullcontext():
            if run.trains:
                _training_step(tracker, hf_model, run, dtypes)
            else:
                _inference_step(tracker, hf_model, model_spec, run, dtypes)
    workspace = gpu_spec.cublas_workspace_bytes
    peaks = {phase: peak.bytes + workspace for phase, peak in tracker.peaks.items()}
    categories = {}
    for phase in tracker.peaks:
        categories[phase] = {**tracker.phase_categories(phase), "cublas_workspace": workspace}
    return _Raw(peaks, categories, tracker.paged_bytes)


def prepare(hf_model, model_spec, run, dtypes) -> None:
    """Quantize, wrap LoRA around and k-bit prepare the built model as the run's method does."""
    lora_names = lora_target_names(model_spec, run, dtypes)
    if run.method == "qlora":
        hf_model.requires_grad_(False)
        arch.quantize_decoder_linears(hf_model, run, dtypes, lora_names, run.lora_rank)
        if run.kbit_prep is True:  # checkpointing is enabled with the training step
            prepare_for_kbit_training(hf_model, use_gradient_checkpointing=False)
        elif run.kbit_prep == "norms":  # the QLoRA paper's qlora.py: only the norms to fp32
            for name, module in hf_model.named_modules():
                if "norm" in name.split(".")[-1]:
                    module.float()
    elif run.method == "inference":
        hf_model.requires_grad_(False)
        if dtypes.base_quantized:
            arch.quantize_decoder_linears(hf_model, run, dtypes, (), 0)
    elif run.method == "lora":
        add_lora(hf_model, run, dtypes, lora_names)
        if run.gradient_checkpointing:  # what peft's PeftModel does for a float base with checkpointing
            hf_model.enable_input_require_grads()


@contextlib.contextmanager
def _no_grad_unless(trains: bool):
    with contextlib.nullcontext() if trains else torch.no_grad():
        yield


def _register_parameters(tracker, hf_model) -> None:
    from vramplan.torch_nf4.linear import NF4Linear

    quant_buffers = set()
    packed = set()
    for module in hf_model.modules():
        if isinstance(module, NF4Linear):
            packed.add(id(module.weight))
            quant_buffers.update(id(buffer) for buffer in module.buffers(recurse=False))
    for name, param in hf_model.named_parameters():
        if id(param) in packed:
            tracker.track(param, "quantized_weights")
        elif "lora_" in name:
            tracker.track(param, "lora_adapters")
        else:
            tracker.track(param, "float_weights")
    for buffer in hf_model.buffers():
        tracker.track(buffer, "quant_state" if id(buffer) in quant_buffers else "float_weights")


def _autocast(dtypes):
    compute = arch.TORCH_DTYPES[dtypes.compute]
    return torch.autocast("cpu", dtype=compute, enabled=compute != torch.float32)


def _training_step(tracker, hf_model, run, dtypes) -> None:
    hf_model.train()
    if run.gradient_checkpointing:
        enable_checkpointing(hf_model)
    trainable = [p for p in hf_model.parameters() if p.requires_grad]
    if not trainable:
        raise InputError("method", "nothing to train in this run")
    optimizer = make_optimizer(run.optimizer, trainable)
    input_ids = torch.zeros(run.micro_batch_size, run.seq_len, dtype=torch.long)
    lm_head = hf_model.get_output_embeddings()

    def enter_head(module, args):
        tracker.category = "logits_loss"
        hidden = args[0]
        if hidden.requires_grad:
            hidden.register_hook(lambda grad: tracker.start_phase("layer_backward", "activations"))

    hook = lm_head.register_forward_pre_hook(enter_head)
    with tracker:
        for param in trainable:  # warm-up: the optimizer state of earlier steps
            param.grad = torch.zeros_like(param)
        optimizer.step()
        for tensor, category in state_categories(optimizer):
            tracker.recategorize(tensor, category)
        tracker.paged_bytes = sum(t.untyped_storage().nbytes() for t, c in state_categories(optimizer) if c == PAGED)
        optimizer.zero_grad(set_to_none=run.grad_accum_steps == 1)
        for param in trainable:
            if param.grad is not None:
                tracker.recategorize(param.grad, "gradients")

        tracker.start_phase("forward", "activations")
        with _autocast(dtypes):
            loss = hf_model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        tracker.start_phase("loss_backward", "logits_loss")
        loss.backward()
        del loss
        for param in trainable:
            tracker.recategorize(param.grad, "gradients")
        tracker.start_phase("optimizer", "optimizer_step_temp")
        optimizer.step()
        tracker.stop()
        optimizer.zero_grad(set_to_none=True)
    hook.remove()


def _inference_step(tracker, hf_model, model_spec, run, dtypes) -> None:
    from transformers import StaticCache

    hf_model.eval()
    batch, seq = run.micro_batch_size, run.seq_len
    input_ids = torch.zeros(batch, seq, dtype=torch.long)
    lm_head = hf_model.get_output_embeddings()

    def enter_head(module, args):
        tracker.category = "logits_loss"

    def leave_head(module, args, output):
        tracker.category = "activations"

    hooks = [lm_head.register_forward_pre_hook(enter_head), lm_head.register_forward_hook(leave_head)]
    with tracker:
        cache = StaticCache(config=hf_model.config, max_cache_len=seq + run.max_new_tokens)
        tracker.start_phase("generate", "kv_cache")
        cache.early_initialization(batch, model_spec.num_key_value_heads, model_spec.head_dim,
                                   arch.TORCH_DTYPES[dtypes.kv_cache], input_ids.device) \
            if hasattr(cache, "early_initialization") else None
        tracker.category = "activations"
        logits = hf_model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        tracker.category = "logits_loss"
        scores = logits[:, -1, :].float()
        tracker.category = "activations"
        next_ids = torch.zeros(batch, 1, dtype=torch.long)
        hf_model(input_ids=next_ids, past_key_values=cache, use_cache=True, logits_to_keep=1,
                 cache_position=torch.tensor([seq]))
        del logits, scores
        tracker.stop()
    for hook in hooks:
        hook.remove()
