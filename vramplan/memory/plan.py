"""Put the components together phase by phase; the peak is the largest phase.

A training step after warm-up passes through these phases (optimizer state exists in all
of them; gradients are set to None after each step unless accumulation keeps them):

- forward: end of forward, the loss being computed; every saved activation plus the
  logits/loss forward peak.
- loss_backward: cross-entropy backward; activations still saved, logits backward peak.
- layer_backward: the last decoder layer's backward (recomputed first when checkpointing):
  saved activations plus that layer's gradient temporaries and the dequantized weight.
- backward_end: all gradients exist; one layer's activations remain (plus, for tied
  embeddings in full fine-tuning, the shared weight's two partial gradients being summed).
- optimizer: gradients, state and the step's temporaries; no activations.
Inference has one phase, generate: weights, the full KV cache and the prefill temporaries.

Every function here takes sizes as ints or numpy arrays (sweeps), never a second path.
"""
from __future__ import annotations

from dataclasses import dataclass

from vramplan.memory import activations, bnb_autograd, kv_cache, logits, lora, optimizer, parameters, weights
from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes, resolve_dtypes
from vramplan.memory.terms import ALLOCATION, largest, term, total
from vramplan.memory.xp import _is_array, maximum


@dataclass(frozen=True)
class StaticBytes:
    """What stays allocated for the whole run, independent of batch and sequence."""

    quantized_weights: int
    quant_state: int
    float_weights: int


def base_weight_terms(model, run, dtypes: RunDtypes) -> dict[str, list]:
    """Terms of the frozen base weights in their storage format plus the float-kept modules."""
    float_bytes = DTYPE_BYTES[dtypes.float_weights]
    fmt = dtypes.weight_format
    if dtypes.base_quantized:
        codes, state = weights.quantized_weight_terms(
            model, fmt, run.quant_blocksize, run.double_quant, run.group_size, dtypes.moe_experts)
        if fmt.startswith("gguf-"):
            kept = parameters.norm_groups(model) + parameters.linear_bias_groups(model, dtypes.moe_experts)
            codes = list(codes) + weights.gguf_embedding_terms(model, fmt)
            return {"quantized_weights": codes, "quant_state": list(state),
                    "float_weights": weights.tensor_group_terms(kept, 4, "fp32")}
        kept = parameters.unquantized_groups(model, dtypes.moe_experts)
        kept_terms = weights.tensor_group_terms(kept, float_bytes, dtypes.float_weights)
        if dtypes.norm_weights != dtypes.float_weights:  # "norms" k-bit preparation: norms alone in fp32
            norms = parameters.norm_groups(model) + parameters.qk_norm_groups(model)
            others = [group for group in kept if group not in norms]
            kept_terms = (weights.tensor_group_terms(others, float_bytes, dtypes.float_weights)
                          + weights.tensor_group_terms(norms, DTYPE_BYTES[dtypes.norm_weights], dtypes.norm_weights))
        return {"quantized_weights": list(codes), "quant_state": list(state), "float_weights": kept_terms}
    everything = parameters.all_parameter_groups(model, dtypes.moe_experts)
    return {"quantized_weights": [], "quant_state": [],
            "float_weights": weights.tensor_group_terms(everything, float_bytes, dtypes.float_weights)}


def base_weight_bytes(model, run, dtypes: RunDtypes) -> StaticBytes:
    """Frozen base weights in their storage format plus the float-kept modules."""
    return StaticBytes(**{name: total(terms) for name, terms in base_weight_terms(model, run, dtypes).items()})


def trainable_groups(model, run, lora_rank, moe_experts: str = "linear"):
    if run.method == "full":
        return parameters.all_parameter_groups(model, moe_experts)
    if run.uses_lora:
        return lora.lora_tensor_groups(model, run.lora_targets, lora_rank, moe_experts)
    return []


def phase_components(model, gpu, run, dtypes: RunDtypes | None = None, *,
                     micro_batch_size=None, seq_len=None, lora_rank=None) -> dict[str, dict]:
    """Bytes of every allocated component in every phase: {phase: {component: bytes}}, the sums of `phase_terms`."""
    phases = phase_terms(model, gpu, run, dtypes, micro_batch_size=micro_batch_size, seq_len=seq_len,
                         lora_rank=lora_rank)
    return {phase: {name: total(terms) for name, terms in components.items()} for phase, components in phases.items()}


_SAVED = "activations.saved_bytes_per_token: norms, q/k/v/o inputs, attention, MLP (module docstring)"


def phase_terms(model, gpu, run, dtypes: RunDtypes | None = None, *,
                micro_batch_size=None, seq_len=None, lora_rank=None) -> dict[str, dict[str, list]]:
    """The terms of every allocated component in every phase: {phase: {component: [Term]}}."""
    dtypes = dtypes or resolve_dtypes(run, gpu, model)
    batch = run.micro_batch_size if micro_batch_size is None else _as_sweep_axis(micro_batch_size)
    seq = run.seq_len if seq_len is None else _as_sweep_axis(seq_len)
    rank = run.lora_rank if lora_rank is None else _as_sweep_axis(lora_rank)

    base = base_weight_terms(model, run, dtypes)
    base["cublas_workspace"] = [term("cuBLAS workspace", "GPU profile field", (("B", gpu.cublas_workspace_bytes),),
                                     "aten/src/ATen/cuda/CublasHandlePool.cpp")]
    if not run.trains:
        return {"generate": _generate_phase(model, run, dtypes, base, batch, seq)}

    trainable_bytes = DTYPE_BYTES[dtypes.trainable]
    groups = trainable_groups(model, run, rank, dtypes.moe_experts)
    if run.uses_lora:
        base["lora_adapters"] = weights.tensor_group_terms(
            lora.lora_tensor_groups(model, run.lora_targets, rank, dtypes.moe_experts), DTYPE_BYTES[dtypes.lora],
            dtypes.lora)
    base["optimizer_state"] = optimizer.optimizer_state_terms(run.optimizer, groups, trainable_bytes)
    grads_all = weights.tensor_group_terms(groups, trainable_bytes, dtypes.trainable)
    grads_kept = grads_all if run.grad_accum_steps > 1 else []

    layers = model.num_hidden_layers
    bs = (("b", batch), ("s", seq))
    saved_per_token = sum(activations.saved_bytes_per_token(model, run, dtypes, seq, rank).values())
    copies_layer = activations.per_layer_weight_copies(model, run, dtypes, rank)
    transient = layer_backward_transient_terms(model, run, dtypes, batch, seq, rank)
    logits_fwd, logits_bwd = logits.logits_loss_terms(model, run, dtypes, batch, seq)
    head_grads = []
    if run.method == "full":
        head_grads = [term("lm_head weight gradient", "tensors x elements x T",
                           (("tensors", 1), ("elements", model.vocab_size * model.hidden_size), ("T", trainable_bytes)),
                           "full fine-tuning", rounding=ALLOCATION)]

    def per_token(name, formula, nbytes, source, *extra):
        return term(name, formula, (("B/token", nbytes),) + bs + extra, source)

    saved_one = [per_token("one layer's saved set", "B/token x b x s", saved_per_token, _SAVED)]
    copies = [term("autocast weight copies", "B/layer x layers", (("B/layer", copies_layer), ("layers", layers)),
                   "activations.per_layer_weight_copies")] if _any(copies_layer) else []
    copies_one = [term("one layer's autocast weight copies", "B/layer", (("B/layer", copies_layer),),
                       "activations.per_layer_weight_copies")] if _any(copies_layer) else []
    final_fwd, final_bwd = activations.final_norm_bytes_per_token(model, run, dtypes)
    final_f = [per_token("final norm (saved + output)", "B/token x b x s", final_fwd,
                         "activations.final_norm_bytes_per_token")]
    final_b = [per_token("final norm (saved)", "B/token x b x s", final_bwd, "activations.final_norm_bytes_per_token")]
    if run.gradient_checkpointing:
        kept_per_token = activations.checkpoint_bytes_per_token(model, dtypes)
        held = [per_token("layer inputs kept by checkpointing", "R x h x b x s x layers", kept_per_token,
                          "torch.utils.checkpoint (non-reentrant)", ("layers", layers))]
        # autocast's cache holds every cast until forward ends
        forward_acts = held + copies + final_f
        backward_acts = held + final_b
        top_layer = held + saved_one + copies_one + transient
        last_layer = [per_token("last layer's input", "R x h x b x s", kept_per_token,
                                "torch.utils.checkpoint (non-reentrant)")] + saved_one + copies_one + transient
    else:
        all_layers = [per_token("saved for backward, every layer", "B/token/layer x b x s x layers", saved_per_token,
                                _SAVED, ("layers", layers))] + copies
        unsaved = activations.first_layer_unsaved_per_token(model, run, dtypes)
        if unsaved:
            all_layers.append(term("not saved by layer 1 (embedding needs no grad)", "-(B/token) x b x s",
                                   (("B/token", -unsaved),) + bs, "activations.first_layer_unsaved_per_token"))
        forward_acts = all_layers + final_f
        backward_acts = all_layers + final_b
        top_layer = all_layers + transient
        last_layer = saved_one + copies_one + transient

    held = bnb_autograd.held_input_terms(model, run, dtypes, batch, seq)
    int8_copy = bnb_autograd.int8_backward_weight_copy_terms(model, dtypes)
    forward_acts = forward_acts + held["forward"]
    backward_acts = backward_acts + held["loss_backward"]
    top_layer = top_layer + held["layer_backward"] + int8_copy
    last_layer = last_layer + held["backward_end"] + int8_copy

    tied = logits.tied_embedding_gradient_terms(model, run, dtypes)
    step_temp = optimizer.optimizer_step_temp_terms(run.optimizer, groups, trainable_bytes)
    layer_grads = largest("gradients kept or lm_head gradient", "max(kept gradients, lm_head gradient)",
                          [grads_kept, head_grads]) if head_grads else grads_kept
    return {
        "forward": {**base, "gradients": grads_kept, "activations": forward_acts, "logits_loss": logits_fwd},
        "loss_backward": {**base, "gradients": grads_kept, "activations": backward_acts, "logits_loss": logits_bwd},
        "layer_backward": {**base, "gradients": layer_grads, "activations": top_layer},
        "backward_end": {**base, "gradients": grads_all + tied, "activations": last_layer},
        "optimizer": {**base, "gradients": grads_all, "optimizer_step_temp": step_temp},
    }


def layer_backward_transient_terms(model, run, dtypes: RunDtypes, batch, seq, rank) -> list:
    """`activations.layer_backward_transient_bytes` as terms: the largest moment of the last layer's
    backward (B/token x b x s, plus the dequantized weight where it is alive) and the incoming gradient."""
    source = "activations.layer_backward_moments (trace simulator live set at layer_backward)"
    moments = []
    for name, formula, per_token, with_dequant in activations.layer_backward_moments(model, run, dtypes, seq, rank):
        parts = [term(name, f"({formula}) B/token x b x s", (("B/token", per_token), ("b", batch), ("s", seq)), source)]
        dequant = activations.dequant_temp_bytes(model, dtypes) if with_dequant else 0
        if dequant:
            parts.append(term("dequantized weight", "largest linear x C", (("B", dequant),), "bitsandbytes MatMul4Bit"))
        moments.append(parts)
    incoming = activations.incoming_gradient_per_token(model, dtypes)
    incoming_terms = [term("incoming gradient of the layer output", "r h x b x s",
                           (("B/token", incoming), ("b", batch), ("s", seq)), source)] if incoming else []
    return largest("last layer's backward temporaries", "largest moment (activations.layer_backward_moments)",
                   moments, source) + incoming_terms


def _any(value) -> bool:
    """A term worth listing: any non-zero scalar, or any array (sweeps keep every term)."""
    return _is_array(value) or bool(value)


def _as_sweep_axis(value):
    """Arrays become float64: exact to 2**53 bytes and, unlike int64, they cannot
    overflow at batch 4096 x seq 1M with an s^2 attention term."""
    if hasattr(value, "__array__") and not isinstance(value, (int, float)):
        import numpy as np

        return np.asarray(value, dtype=np.float64)
    return value


def _generate_phase(model, run, dtypes, base, batch, seq):
    total_tokens = seq + run.max_new_tokens
    prefill = [term("prefill temporaries", "B/token x b x s",
                    (("B/token", activations.inference_transient_per_token(model, dtypes, run, seq, total_tokens)),
                     ("b", batch), ("s", seq)), "activations.inference_transient_per_token")]
    dequant = activations.dequant_temp_bytes(model, dtypes)
    if dequant:
        prefill.append(term("dequantized weight", "largest linear x C", (("B", dequant),),
                            "bitsandbytes MatMul4Bit"))
    growth = [kv_cache.kv_cache_growth_term(model, dtypes, batch, total_tokens)]
    return {
        **base,
        "kv_cache": [kv_cache.kv_cache_term(model, dtypes, batch, total_tokens)],
        "activations": largest("largest of prefill and cache growth", "max(prefill, cache growth)", [prefill, growth]),
        "logits_loss": [term("last-position logits + fp32 copy", "b x V x (C + 4)",
                             (("b", batch), ("V", model.vocab_size), ("C + 4", DTYPE_BYTES[dtypes.compute] + 4)),
                             "transformers/generation/utils.py")],
    }


def phase_totals(phases: dict[str, dict]) -> dict:
    return {name: sum(components.values()) for name, components in phases.items()}


def peak_allocated_bytes(model, gpu, run, dtypes=None, **sizes):
    """The predicted `torch.cuda.max_memory_allocated()`: the largest phase total."""
    return maximum(*phase_totals(phase_components(model, gpu, run, dtypes, **sizes)).values())


def paged_optimizer_bytes(model, run, dtypes: RunDtypes, lora_rank=None):
    """Optimizer state in CUDA managed memory (bitsandbytes paged optimizers)."""
    rank = run.lora_rank if lora_rank is None else lora_rank
    if not run.trains:
        return 0
    groups = trainable_groups(model, run, rank, dtypes.moe_experts)
    return optimizer.optimizer_state_bytes(run.optimizer, groups, DTYPE_BYTES[dtypes.trainable])[1]
