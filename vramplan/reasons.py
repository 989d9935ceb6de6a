"""Why a run does not fit, when one thing explains it: the line `fit` prints under its verdict.

A plan that does not fit carries a leading reason when one assumption or one component
dominates what it needs: an assumption that alone takes more than half of the required
bytes, or of weights that alone exceed the GPU (transformers >= 5 keeping fused MoE experts
unquantized); weights that alone exceed the GPU; or one component at the peak holding more
than half of the required bytes. The reason names the cause with the plan's own numbers and
the flag that changes it; `advise` re-plans that flag to say whether it is enough. A note
the reason already says is not repeated (`plan` drops it).
"""
from __future__ import annotations

from vramplan.components import base_weight_names
from vramplan.memory import parameters, weights
from vramplan.memory.dtypes import BNB_FORMATS, DTYPE_BYTES

DOMINANT_SHARE = 0.5  # "dominates": more than this share of the required bytes


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f}"


def fused_experts_note(model, dtypes) -> str:
    """transformers' bitsandbytes integration replaces only nn.Linear (replace_with_bnb_linear), so the
    3-D expert parameters of transformers >= 5 stay in the float dtype (`parameters.fused_expert_groups`).
    The note a plan carries whenever that happens; '' when it does not."""
    if not (model.is_moe and dtypes.moe_experts == "fused" and dtypes.weight_format in BNB_FORMATS):
        return ""
    count = parameters.count_elements(parameters.fused_expert_groups(model, "fused"))
    return (f"transformers >= 5 keeps the MoE experts as fused 3-D parameters, which bitsandbytes does not quantize "
            f"({count / 1e9:.1f}B expert and router parameters stay {dtypes.float_weights}); --moe-experts linear "
            "plans transformers 4.x's one nn.Linear per expert, which it quantizes")


def _weight_bytes(components: dict) -> int:
    return sum(components.get(name, 0) for name in base_weight_names())


def fused_experts_reason(model, dtypes, components: dict, required: int, capacity: int) -> str:
    """The fused-experts note as the reason, when those parameters hold most of what is needed,
    or most of weights that alone exceed the GPU."""
    note = fused_experts_note(model, dtypes)
    if not note:
        return ""
    held = weights.tensor_group_bytes(parameters.fused_expert_groups(model, "fused"), DTYPE_BYTES[dtypes.float_weights])
    all_weights = _weight_bytes(components)
    if held > DOMINANT_SHARE * required:
        share = f"{_gib(held)} of the {_gib(required)} GiB needed"
    elif all_weights > capacity and held > DOMINANT_SHARE * all_weights:
        share = f"{_gib(held)} of the {_gib(all_weights)} GiB of weights, which alone exceed the GPU's {_gib(capacity)} GiB"
    else:
        return ""
    return f"unquantized MoE experts take {share}: {note}"


def weights_reason(components: dict, run, dtypes, capacity: int) -> str:
    held = _weight_bytes(components)
    if held <= capacity:
        return ""
    kept = f" base, other modules {dtypes.float_weights}" if dtypes.base_quantized else ""
    fewer_bits = {"lora": "--method qlora (a 4-bit base)", "full": "LoRA/QLoRA"}.get(run.method, "fewer bits per weight")
    return (f"the weights alone ({dtypes.weight_format}{kept}) take {_gib(held)} GiB, more than the GPU's "
            f"{_gib(capacity)} GiB: a smaller model, {fewer_bits} or a bigger GPU")


def component_reason(name: str, held: int, required: int, model, gpu, run, dtypes) -> str:
    """The cause of one dominant component, in the plan's terms, and what shrinks it."""
    share = f"{_gib(held)} of the {_gib(required)} GiB needed"
    tokens = f"{run.micro_batch_size} x {run.seq_len} tokens"
    if name == "float_weights" and run.method == "qlora" and run.kbit_prep is True:
        return (f"peft's prepare_model_for_kbit_training casts embeddings, lm_head and norms to fp32: {share}; "
                "--no-kbit-prep keeps them 16-bit")
    if name == "logits_loss" and run.trains:
        return (f"the logits and loss ({tokens} x a {model.vocab_size:,}-entry vocabulary, upcast to fp32, "
                f"with their gradient) take {share}; --loss-impl chunked or a smaller micro-batch shrinks them")
    if name == "activations" and run.trains and not run.gradient_checkpointing:
        return (f"without gradient checkpointing all {model.num_hidden_layers} layers keep their activations "
                f"({tokens}): {share}; --gradient-checkpointing keeps one input per layer")
    if name == "activations":
        return f"the activations of {tokens} take {share}; a smaller micro-batch or shorter sequences shrink them"
    if name == "kv_cache":
        fp8 = "; --kv-cache-dtype fp8 stores 1 byte per value" if gpu.fp8 and dtypes.kv_cache != "fp8" else ""
        return (f"the {dtypes.kv_cache} KV cache of {run.micro_batch_size} x {run.seq_len + run.max_new_tokens} "
                f"tokens takes {share}{fp8}; a smaller batch or shorter prompts shrink it")
    if name in ("optimizer_state", "gradients"):
        what = "optimizer state takes" if name == "optimizer_state" else "gradients take"
        fix = ("an 8-bit optimizer or Adafactor, --full-precision pure, or LoRA" if run.method == "full"
               else "an 8-bit optimizer or fewer trainable parameters")
        return f"the trained parameters' {what} {share}; {fix} shrinks it"
    if name in ("float_weights", "quantized_weights"):
        lighter = "; --method qlora quantizes the base to 4 bits" if run.method == "lora" else ""
        return f"the {dtypes.weight_format} weights take {share}{lighter}; a smaller model or a bigger GPU"
    return ""


def leading_reason(model, gpu, run, dtypes, components: dict, required: int, capacity: int) -> str:
    """Why the run does not fit, when one assumption or component dominates; '' otherwise."""
    if required <= capacity:
        return ""
    reason = fused_experts_reason(model, dtypes, components, required, capacity) \
        or weights_reason(components, run, dtypes, capacity)
    if reason:
        return reason
    name, held = max(components.items(), key=lambda item: item[1])
    if held <= DOMINANT_SHARE * required:
        return ""
    return component_reason(name, held, required, model, gpu, run, dtypes)


__all__ = ["DOMINANT_SHARE", "fused_experts_note", "leading_reason"]
