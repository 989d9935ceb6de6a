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

from vramplan.memory import activations, kv_cache, logits, lora, optimizer, parameters, weights
from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes, resolve_dtypes
from vramplan.memory.xp import allocation_bytes, maximum

ALLOCATED_COMPONENTS = (
    "quantized_weights", "quant_state", "float_weights", "lora_adapters", "gradients",
    "optimizer_state", "optimizer_step_temp", "activations", "logits_loss", "kv_cache",
    "cublas_workspace",
)


@dataclass(frozen=True)
class StaticBytes:
    """What stays allocated for the whole run, independent of batch and sequence."""

    quantized_weights: int
    quant_state: int
    float_weights: int


def base_weight_bytes(model, run, dtypes: RunDtypes) -> StaticBytes:
    """Frozen base weights in their storage format plus the float-kept modules."""
    float_bytes = DTYPE_BYTES[dtypes.float_weights]
    fmt = dtypes.weight_format
    if dtypes.base_quantized:
        codes, state = weights.quantized_weight_bytes(
            model, fmt, run.quant_blocksize, run.double_quant, run.group_size, dtypes.moe_experts)
        if fmt.startswith("gguf-"):
            kept = parameters.norm_groups(model) + parameters.linear_bias_groups(model, dtypes.moe_experts)
            codes += weights.gguf_embedding_bytes(model, fmt)
            return StaticBytes(codes, state, weights.tensor_group_bytes(kept, 4))
        kept = parameters.unquantized_groups(model, dtypes.moe_experts)
        return StaticBytes(codes, state, weights.tensor_group_bytes(kept, float_bytes))
    everything = parameters.all_parameter_groups(model, dtypes.moe_experts)
    return StaticBytes(0, 0, weights.tensor_group_bytes(everything, float_bytes))


def trainable_groups(model, run, lora_rank, moe_experts: str = "linear"):
    if run.method == "full":
        return parameters.all_parameter_groups(model, moe_experts)
    if run.uses_lora:
        return lora.lora_tensor_groups(model, run.lora_targets, lora_rank, moe_experts)
    return []


def phase_components(model, gpu, run, dtypes: RunDtypes | None = None, *,
                     micro_batch_size=None, seq_len=None, lora_rank=None) -> dict[str, dict]:
    """Bytes of every allocated component in every phase: {phase: {component: bytes}}."""
    dtypes = dtypes or resolve_dtypes(run, gpu, model)
    batch = run.micro_batch_size if micro_batch_size is None else _as_sweep_axis(micro_batch_size)
    seq = run.seq_len if seq_len is None else _as_sweep_axis(seq_len)
    rank = run.lora_rank if lora_rank is None else _as_sweep_axis(lora_rank)

    static = base_weight_bytes(model, run, dtypes)
    base = {
        "quantized_weights": static.quantized_weights,
        "quant_state": static.quant_state,
        "float_weights": static.float_weights,
        "cublas_workspace": gpu.cublas_workspace_bytes,
    }
    if not run.trains:
        return {"generate": _generate_phase(model, run, dtypes, base, batch, seq)}

    trainable_bytes = DTYPE_BYTES[dtypes.trainable]
    groups = trainable_groups(model, run, rank, dtypes.moe_experts)
    if run.uses_lora:
        base["lora_adapters"] = lora.lora_adapter_bytes(model, run.lora_targets, rank, DTYPE_BYTES[dtypes.lora],
                                                        dtypes.moe_experts)
    state_bytes, _paged = optimizer.optimizer_state_bytes(run.optimizer, groups, trainable_bytes)
    base["optimizer_state"] = state_bytes
    grads_all = weights.tensor_group_bytes(groups, trainable_bytes)
    grads_kept = grads_all if run.grad_accum_steps > 1 else 0

    tokens = batch * seq
    layers = model.num_hidden_layers
    saved_layer = sum(activations.saved_bytes_per_token(model, run, dtypes, seq, rank).values()) * tokens
    copies_layer = activations.per_layer_weight_copies(model, run, dtypes, rank)
    transient = activations.layer_backward_transient_bytes(model, run, dtypes, tokens, seq, rank)
    logits_fwd, logits_bwd = logits.logits_loss_bytes(model, run, dtypes, batch, seq)
    head_grads = 0
    if run.method == "full":
        head_grads = allocation_bytes(model.vocab_size * model.hidden_size * trainable_bytes)

    final_fwd, final_bwd = activations.final_norm_bytes_per_token(model, run, dtypes)
    if run.gradient_checkpointing:
        held = activations.checkpoint_bytes_per_token(model, dtypes) * tokens * layers
        # autocast's cache holds every cast until forward ends
        forward_acts = held + copies_layer * layers + final_fwd * tokens
        backward_acts = held + final_bwd * tokens
        top_layer = held + saved_layer + copies_layer + transient
        last_layer = activations.checkpoint_bytes_per_token(model, dtypes) * tokens + saved_layer \
            + copies_layer + transient
    else:
        all_layers = (saved_layer + copies_layer) * layers \
            - activations.first_layer_unsaved_per_token(model, run, dtypes) * tokens
        forward_acts = all_layers + final_fwd * tokens
        backward_acts = all_layers + final_bwd * tokens
        top_layer = all_layers + transient
        last_layer = saved_layer + copies_layer + transient

    step_temp = optimizer.optimizer_step_temp_bytes(run.optimizer, groups, trainable_bytes)
    return {
        "forward": {**base, "gradients": grads_kept, "activations": forward_acts, "logits_loss": logits_fwd},
        "loss_backward": {**base, "gradients": grads_kept, "activations": backward_acts, "logits_loss": logits_bwd},
        "layer_backward": {**base, "gradients": maximum(grads_kept, head_grads), "activations": top_layer},
        "backward_end": {**base, "gradients": grads_all + logits.tied_embedding_gradient_bytes(model, run, dtypes),
                         "activations": last_layer},
        "optimizer": {**base, "gradients": grads_all, "optimizer_step_temp": step_temp},
    }


def _as_sweep_axis(value):
    """Arrays become float64: exact to 2**53 bytes and, unlike int64, they cannot
    overflow at batch 4096 x seq 1M with an s^2 attention term."""
    if hasattr(value, "__array__") and not isinstance(value, (int, float)):
        import numpy as np

        return np.asarray(value, dtype=np.float64)
    return value


def _generate_phase(model, run, dtypes, base, batch, seq):
    total_tokens = seq + run.max_new_tokens
    transient = maximum(
        activations.inference_transient_per_token(model, dtypes, run, seq, total_tokens) * batch * seq
        + activations.dequant_temp_bytes(model, dtypes),
        kv_cache.kv_cache_growth_transient(model, dtypes, batch, total_tokens),
    )
    return {
        **base,
        "kv_cache": kv_cache.kv_cache_bytes(model, dtypes, batch, total_tokens),
        "activations": transient,
        "logits_loss": logits.inference_logits_bytes(model, dtypes, batch),
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
