"""Activations saved for backward, per decoder layer, and the transients around them.

The accounting follows the tensors autograd actually saves in a transformers decoder
layer run under `torch.autocast` (the HF Trainer with bf16/fp16), with bitsandbytes-style
quantized linears (which save only the packed weight) and peft LoRA:

- RMSNorm computes in fp32: `pow` and `mul` save the fp32 input (4 h) and rstd (4)
  (transformers/models/llama/modeling_llama.py, LlamaRMSNorm).
- A frozen linear saves nothing per token; a trainable one (full fine-tuning) saves its
  input cast to the compute dtype. Autocast casts non-leaf inputs per call, so three
  projections of one fp32 input save three copies; an input already in the compute dtype
  is one shared tensor.
- LoRA (peft/tuners/lora/layer.py): dropout saves a 1-byte mask and lora_A saves the
  dropout output cast to the compute dtype; lora_B saves lora_A's output (r values).
- SDPA / flash attention save q, k, v, the output and a fp32 logsumexp per head; no s^2
  term (Dao et al. 2022). Eager attention saves the fp32 softmax output and its
  compute-dtype copy: H x s per token per layer.
- The gated MLP saves the activation input, its output and the up projection (i each).
- Fused MoE experts (transformers >= 5, `moe_experts="fused"`): see `fused_expert_saved_per_token`.
Without gradient checkpointing all layers keep their saved set; with it (non-reentrant)
each layer keeps only its input and one layer is recomputed during backward.
"""
from __future__ import annotations

from vramplan.families import get_family
from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes
from vramplan.memory.lora import targeted_linears
from vramplan.memory.xp import ceil_div, maximum


def _consumer_group_bytes(names, in_features, input_bytes, compute_bytes, lora_names,
                          trainable_weights: bool, dropout: bool, rank):
    """Per-token bytes saved by linears `names` that all read one input of `input_bytes`."""
    shared_input = False
    saved = 0
    for name in names:
        if trainable_weights:
            if input_bytes == compute_bytes:
                shared_input = True
            else:
                saved += compute_bytes * in_features
        if name in lora_names:
            if dropout:
                saved += (1 + compute_bytes) * in_features
            elif input_bytes == compute_bytes:
                shared_input = True
            else:
                saved += compute_bytes * in_features
            saved += compute_bytes * rank
    if shared_input:
        saved += input_bytes * in_features
    return saved


def effective_attention(model, run) -> str:
    """The attention implementation transformers really runs: a family without an SDPA path
    (`Family.supports_sdpa`; Gemma-2's `_supports_sdpa = False`: SDPA cannot soft-cap scores) falls
    back to eager."""
    if run.attention == "sdpa" and not get_family(model.architecture).supports_sdpa:
        return "eager"
    return run.attention


def saved_bytes_per_token(model, run, dtypes: RunDtypes, seq_len, rank=None):
    """Bytes one decoder layer saves for backward per token, by part (no checkpointing).

    Returns a dict: attention_norm, qkv_inputs, attention_core, qk_norm, o_proj_input, mlp_norm,
    mlp_inputs, mlp_intermediate. `seq_len` enters only through eager attention's s^2 term.
    """
    rank = run.lora_rank if rank is None else rank
    h, i, q, kv, heads = (model.hidden_size, model.intermediate_size, model.q_dim,
                          model.kv_dim, model.num_attention_heads)
    c = DTYPE_BYTES[dtypes.compute]
    r_bytes = DTYPE_BYTES[dtypes.residual]
    norm_out = max(r_bytes, DTYPE_BYTES[dtypes.float_weights])
    full = run.method == "full"
    lora_names = ({lin.name for lin in targeted_linears(model, run.lora_targets, dtypes.moe_experts)}
                  if run.uses_lora else set())
    dropout = run.lora_dropout > 0

    def out_bytes(input_bytes):  # quantized linears return the input dtype (bnb), float ones compute dtype
        return input_bytes if dtypes.base_quantized else c

    def group(names, in_features, input_bytes):
        return _consumer_group_bytes(names, in_features, input_bytes, c, lora_names, full, dropout, rank)

    norm = (4 * h + 4) + (r_bytes * h if full else 0)
    attention_norms = -(-model.norms_per_layer // 2)  # Gemma-2: pre and post norms around each block
    mlp_norms = model.norms_per_layer // 2
    qkv_names = ("qkv_proj",) if model.fused_qkv else ("q_proj", "k_proj", "v_proj")
    parts = {"attention_norm": norm * attention_norms, "qkv_inputs": group(qkv_names, h, norm_out)}

    if effective_attention(model, run) == "eager":
        probs = (4 + c) * heads * seq_len
        if model.final_logit_softcapping:  # Gemma-2 also soft-caps attention scores: tanh saves its output
            probs = probs + c * heads * seq_len
        parts["attention_core"] = 3 * c * q + probs
    else:
        parts["attention_core"] = c * (q + 2 * kv) + c * q + 4 * heads
    parts["qk_norm"] = qk_norm_saved_per_token(model, run, dtypes)
    parts["o_proj_input"] = group(("o_proj",), q, c)
    parts["mlp_norm"] = norm * mlp_norms

    if model.is_moe and dtypes.moe_experts == "fused":
        parts["mlp_inputs"] = group(("gate",), h, norm_out) + 4 * model.num_local_experts
        parts["mlp_intermediate"] = model.num_experts_per_tok * fused_expert_saved_per_token(model, run, dtypes)
    elif model.is_moe:
        k = model.num_experts_per_tok
        gate_out = out_bytes(norm_out)
        expert = (group(("w1", "w3"), h, norm_out) + 3 * gate_out * i
                  + group(("w2",), i, gate_out) + out_bytes(gate_out) * h)
        parts["mlp_inputs"] = group(("gate",), h, norm_out) + 4 * model.num_local_experts
        parts["mlp_intermediate"] = k * expert
    else:
        gate_out = out_bytes(norm_out)
        names = ("gate_up_proj",) if model.fused_gate_up else ("gate_proj", "up_proj")
        parts["mlp_inputs"] = group(names, h, norm_out)
        parts["mlp_intermediate"] = 3 * gate_out * i + group(("down_proj",), i, gate_out)
    return parts


def qk_norm_saved_per_token(model, run, dtypes: RunDtypes):
    """Bytes per token the per-head q and k RMSNorms save (Qwen3, Gemma-3; 0 for other models).

    Both compute in fp32 (Qwen3RMSNorm, Gemma3RMSNorm): `pow` and the multiply by rsqrt save the fp32
    projection output (4 x (q + kv)) and rstd (4 per head); the weight multiply saves its other
    operand only when the weight trains (full fine-tuning): Qwen3 the normalized values cast back to
    the compute dtype (c), a family with `qk_norm_fp32_weight_operand` (Gemma-3) the fp32 ones before
    `(1 + weight)` (4).
    """
    if not model.qk_norm:
        return 0
    q_and_k = model.q_dim + model.kv_dim
    saved = 4 * q_and_k + 4 * (model.num_attention_heads + model.num_key_value_heads)
    if run.method == "full":
        fp32_operand = get_family(model.architecture).qk_norm_fp32_weight_operand
        saved += (4 if fp32_operand else DTYPE_BYTES[dtypes.compute]) * q_and_k
    return saved


def fused_expert_saved_per_token(model, run, dtypes: RunDtypes):
    """Bytes saved per routed token (token x expert pair) by transformers 5's fused experts.

    transformers' default experts path (integrations/moe.py, `grouped_mm_experts_forward`) runs
    `grouped_mm(input.to(weight.dtype), weight)`, which autocast does not touch: everything is in
    the experts' own dtype x (fp32 after k-bit preparation). Saved: the gate_up output (2i; the
    activation keeps the `chunk` view, so the whole storage), the activation output (i), the down
    output (h, kept by the multiplication with the fp32 routing weight, 4 B). A frozen weight makes
    grouped_mm save only the weight (a view: no bytes) - autograd's GroupedMmBackward0; a trained
    one (full fine-tuning) also saves its inputs: the gathered hidden state (h) and the product (i).
    So x (3i + h) + 4, plus x (h + i) in full fine-tuning; no per-expert weight copies.
    """
    h, i = model.hidden_size, model.intermediate_size
    x = DTYPE_BYTES[dtypes.float_weights]
    saved = x * (3 * i + h) + 4
    if run.method == "full":
        saved += x * (h + i)
    return saved


def embedding_output_requires_grad(run) -> bool:
    """Whether autograd tracks the embedding output: a trained embedding (full fine-tuning), or peft
    LoRA on a float base with checkpointing on, where `PeftModel` calls `enable_input_require_grads`
    (peft/peft_model.py, `_prepare_model_for_gradient_checkpointing`; not for k-bit models, and our
    k-bit preparation uses non-reentrant checkpointing, which needs no input gradient)."""
    return run.method == "full" or (run.method == "lora" and run.gradient_checkpointing)


def first_layer_unsaved_per_token(model, run, dtypes: RunDtypes):
    """Bytes per token that layer 1 does not save when the embedding output needs no gradient.

    Its input RMSNorm then saves nothing (4 h + 4: the fp32 input and rstd), and the LoRA branches
    that read the norm output save no dropout mask (1 byte x h each): native_dropout's backward
    keeps the mask only for an input that requires grad. (lora_A still saves its input: its weight
    trains.) Read off the trace simulator's layer-1 live set (Llama-3.1-8B QLoRA: 14 MiB at 512 tokens).
    """
    if embedding_output_requires_grad(run) or (run.gradient_checkpointing and dtypes.stack.checkpoint_reentrant):
        return 0  # reentrant checkpointing trains LoRA only through enable_input_require_grads
    h = model.hidden_size
    masks = 0
    if run.uses_lora and run.lora_dropout > 0:
        qkv_names = ("qkv_proj",) if model.fused_qkv else ("q_proj", "k_proj", "v_proj")
        targeted = {lin.name for lin in targeted_linears(model, run.lora_targets, dtypes.moe_experts)}
        masks = h * sum(name in targeted for name in qkv_names)
    return 4 * h + 4 + masks


def final_norm_bytes_per_token(model, run, dtypes: RunDtypes):
    """(forward, loss backward) bytes per token of the model's final RMSNorm.

    It saves what a layer's norm saves (fp32 input and rstd: 4 h + 4; full fine-tuning also the
    weight's input, r h), and its output (h in max(residual, float weight) dtype) stays referenced
    by `ForCausalLM.forward` (`hidden_states`) until the loss is computed. Read off the trace
    simulator's forward live set (Llama-3.1-8B QLoRA: the missing 16 MiB at 512 tokens).
    """
    h = model.hidden_size
    r = DTYPE_BYTES[dtypes.residual]
    saved = 4 * h + 4 + (r * h if run.method == "full" else 0)
    output = max(r, DTYPE_BYTES[dtypes.float_weights]) * h
    return saved + output, saved


def per_layer_weight_copies(model, run, dtypes: RunDtypes, rank=None):
    """Bytes per layer of weights that autocast casts and autograd saves (not per token).

    Autocast caches the compute-dtype copy of every leaf parameter that requires grad
    (aten/src/ATen/autocast_mode.cpp, `cached_cast`) and matmul saves it: for fp32 LoRA
    adapters that is r x (in + out) per module; for mixed-precision full fine-tuning every
    linear weight. The fused-MoE router (a bare weight under F.linear) is cast too, cached when it
    trains, afresh per call when frozen - F.linear saves it either way: E x h. The fused experts
    go through grouped_mm, which autocast does not cast: no copies.
    """
    rank = run.lora_rank if rank is None else rank
    c = DTYPE_BYTES[dtypes.compute]
    layout = dtypes.moe_experts
    copies = 0
    if run.method == "full" and DTYPE_BYTES[dtypes.trainable] != c:
        copies = sum(c * lin.in_features * lin.out_features * lin.count for lin in model.layer_linears(layout))
    elif run.uses_lora and DTYPE_BYTES[dtypes.lora] != c:
        copies = sum(c * rank * (lin.in_features + lin.out_features) * lin.count
                     for lin in targeted_linears(model, run.lora_targets, layout))
    if model.is_moe and layout == "fused" and DTYPE_BYTES[dtypes.float_weights] != c:
        copies = copies + c * model.num_local_experts * model.hidden_size
    return copies


def backward_transient_per_token(model, run, dtypes: RunDtypes, seq_len):
    """Gradients of one layer's intermediates alive at once during its backward.

    MLP: mul backward holds grad(prod), grad(act), grad(up) (3 x i); attention (flash/
    SDPA): dq, dk, dv plus flash's fp32 dq accumulator; eager: the s^2 score gradients.
    """
    c = DTYPE_BYTES[dtypes.compute]
    r_bytes = DTYPE_BYTES[dtypes.residual]
    mlp_bytes = r_bytes if dtypes.base_quantized else c
    if model.is_moe and dtypes.moe_experts == "fused":  # grouped_mm computes in the experts' dtype
        mlp_bytes = DTYPE_BYTES[dtypes.float_weights]
    i = model.intermediate_size
    mlp = 3 * mlp_bytes * i * (model.num_experts_per_tok if model.is_moe else 1)
    if effective_attention(model, run) == "eager":
        attention = (4 + 2 * c) * model.num_attention_heads * seq_len
    else:
        attention = c * (model.q_dim + 2 * model.kv_dim) + 4 * model.q_dim
    return maximum(mlp, attention) + 2 * r_bytes * model.hidden_size


def layer_backward_moments(model, run, dtypes: RunDtypes, seq_len, rank=None) -> list[tuple[str, str, object, bool]]:
    """The candidate largest moments of the last layer's backward, beside the saved activations:
    (name, formula, bytes per token, whether the dequantized weight is alive too).

    For a dense gated MLP (per token; r residual, c compute, m the MLP's stream dtype: r under a
    quantized base, whose linears return their input dtype, else c):
    - down_proj backward: the gradient cast to c (c h), grad_x = grad @ W (c i), the LoRA branch's
      input gradient (m i, when down_proj has LoRA) and the dequantized W (`dequant_temp_bytes`);
    - the gate*up product's backward: grad(prod), grad(act), grad(up) (3 m i);
    - checkpointing only, the end of the layer's recompute (down_proj's forward matmul): the MLP
      input held by the MLP's frame (norm output, h), the product (m i), its cast to c (c i), the
      matmul output (c h) and the dequantized W, less down_proj's own LoRA saves, not made yet.
    Attention (flash/SDPA): dq, dk, dv plus flash's fp32 dq accumulator; eager: the s^2 score
    gradients. Read off the trace simulator's live set at the layer_backward peak (vramplan/simulate).
    Fused MoE experts keep the coarse bound `backward_transient_per_token` + dequant.
    """
    rank = run.lora_rank if rank is None else rank
    if model.is_moe:
        return [("MoE layer backward (coarse bound)", "activations.backward_transient_per_token",
                 backward_transient_per_token(model, run, dtypes, seq_len), True)]
    c = DTYPE_BYTES[dtypes.compute]
    r = DTYPE_BYTES[dtypes.residual]
    m = r if dtypes.base_quantized else c
    h, i = model.hidden_size, model.intermediate_size
    norm_out = max(r, DTYPE_BYTES[dtypes.float_weights])
    down_lora = run.uses_lora and "down_proj" in {
        lin.name for lin in targeted_linears(model, run.lora_targets, dtypes.moe_experts)}
    moments = [("down_proj backward", "c h + c i" + (" + m i (LoRA input gradient)" if down_lora else ""),
                c * h + c * i + (m * i if down_lora else 0), True),
               ("gate*up product backward", "3 m i", 3 * m * i, False)]
    if run.gradient_checkpointing:
        down_saved = _consumer_group_bytes(("down_proj",), i, m, c, {"down_proj"} if down_lora else set(),
                                           run.method == "full", run.lora_dropout > 0, rank)
        down_saved -= c * rank if down_lora else 0  # lora_B's input (r values) is not down_proj's input
        moments.append(("end of the layer's recompute", "norm h + m i + c i + c h - down_proj's saves",
                        norm_out * h + m * i + c * i + c * h - down_saved, True))
    if effective_attention(model, run) == "eager":
        moments.append(("eager attention backward", "(4 + 2 c) x heads x s + r h",
                        (4 + 2 * c) * model.num_attention_heads * seq_len + r * h, True))
    else:
        moments.append(("attention backward (dq, dk, dv, fp32 dq)", "c (q + 2 kv) + 4 q + r h",
                        c * (model.q_dim + 2 * model.kv_dim) + 4 * model.q_dim + r * h, True))
    return moments


def incoming_gradient_per_token(model, dtypes: RunDtypes) -> int:
    """The gradient of the layer's output, r h per token, alive through every moment of a dense layer's
    backward (0 for fused MoE experts, whose coarse bound `backward_transient_per_token` stands alone)."""
    return 0 if model.is_moe else DTYPE_BYTES[dtypes.residual] * model.hidden_size


def layer_backward_transient_bytes(model, run, dtypes: RunDtypes, tokens, seq_len, rank=None):
    """Bytes alive beside the saved activations at the last layer's backward peak, dequant included:
    the largest of `layer_backward_moments` plus the incoming gradient."""
    dequant = dequant_temp_bytes(model, dtypes)
    moments = [per_token * tokens + (dequant if with_dequant else 0)
               for _name, _formula, per_token, with_dequant in layer_backward_moments(model, run, dtypes, seq_len, rank)]
    return maximum(*moments) + incoming_gradient_per_token(model, dtypes) * tokens


def dequant_temp_bytes(model, dtypes: RunDtypes):
    """One dequantized weight in compute dtype, alive during each NF4/FP4 matmul (fwd and bwd).

    bitsandbytes `MatMul4Bit` runs `F.linear(A, dequantize_4bit(B).to(A.dtype).t())`
    (bitsandbytes/autograd/_functions.py); the largest decoder linear bounds it. `dequantize_4bit` returns
    `quant_state.dtype`, the dtype the weight was loaded in: when that is not the compute dtype
    (`vramplan.stack.rules.bnb_load_dtype`: fp16 under transformers 4.x) `.to(A.dtype)` makes a second copy,
    both alive during the cast.
    """
    if dtypes.weight_format not in ("nf4", "fp4"):
        return 0
    largest = max(lin.in_features * lin.out_features for lin in model.layer_linears(dtypes.moe_experts))
    load = dtypes.stack.load_dtype or dtypes.compute
    second = DTYPE_BYTES[load] if load != dtypes.compute else 0  # dequantize_4bit gives quant_state.dtype
    return largest * (DTYPE_BYTES[dtypes.compute] + second)


def checkpoint_bytes_per_token(model, dtypes: RunDtypes):
    """Gradient checkpointing keeps each layer's input hidden state: h in the residual dtype."""
    return DTYPE_BYTES[dtypes.residual] * model.hidden_size


def attention_mask_kinds(model) -> int:
    """4-D masks eager attention builds per forward: families that alternate sliding-window and
    global layers (`Family.alternating_windows`) build one mask of each (`Gemma2Model.forward`,
    `Gemma3TextModel.forward`)."""
    return 2 if get_family(model.architecture).alternating_windows else 1


def inference_transient_per_token(model, dtypes: RunDtypes, run=None, seq_len=None, total_tokens=None):
    """Largest set of live temporaries inside one layer during prefill (no autograd).

    Held throughout by the model's forward: the embedding output and the current layer's input
    (2 r h). Then the largest moment: MLP: the attention residual and the norm output (2 c h) with
    gate/act, up and their product (3 x i; a fused gate_up projection keeps its 2 i output beside
    the activation and the product: 4 x i); attention: q, k, v, output and its contiguous copy;
    RMSNorm: two fp32 copies of the hidden state. Eager attention (`run`, `seq_len` and the cache
    length `total_tokens` given) over S keys: the masked scores (C), their fp32 upcast and the fp32
    softmax ((C + 8) x heads x S), the 4-D masks (C x S each, `attention_mask_kinds`), q and the
    GQA-repeated k and v (C q (1 + 2 S / s)) and the norm output. Read off the trace simulator's
    prefill live set (`vramplan/simulate`, StaticCache of seq + max_new_tokens keys).
    Fused MoE experts (integrations/moe.py, grouped_mm_experts_forward), per routed token in the
    experts' dtype x: the gathered hidden state (h), gate_up (2i), the activation (i) and the
    product (i) are alive together, beside the norm output and the previous layer's output:
    2 c h + k x (4i + h).
    """
    c = DTYPE_BYTES[dtypes.compute]
    r = DTYPE_BYTES[dtypes.residual]
    h, i, q, kv = model.hidden_size, model.intermediate_size, model.q_dim, model.kv_dim
    k = model.num_experts_per_tok if model.is_moe else 1
    mlp = (4 if model.fused_gate_up else 3) * c * i * k
    if model.is_moe and dtypes.moe_experts == "fused":
        mlp = 2 * c * h + k * DTYPE_BYTES[dtypes.float_weights] * (4 * i + h)
    moments = [2 * c * h + max(mlp, c * (3 * q + 2 * kv), (8 + c) * h)]
    if run is not None and seq_len is not None and effective_attention(model, run) == "eager":
        keys = seq_len if total_tokens is None else total_tokens
        moments.append(c * h + (c + 8) * model.num_attention_heads * keys
                       + attention_mask_kinds(model) * c * keys + c * q + ceil_div(2 * c * q * keys, seq_len))
    return 2 * r * h + maximum(*moments)
