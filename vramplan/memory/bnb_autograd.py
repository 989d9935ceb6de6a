"""What bitsandbytes' autograd Functions keep beyond the packed weight: the matmul inputs they hold as
`ctx` attributes, and the int8 backward's dequantized weight copy.

- `MatMul8bitLt.forward` (bitsandbytes/autograd/_functions.py, 0.50.2) runs `ctx.tensors = (CAt, subA, A)`
  whenever an input needs grad: A is the linear's input itself (a view, no cast; CAt is None for a frozen
  weight and subA is the few outlier columns, not counted). Its backward makes
  `CB = state.CB.to(ctx.dtype_A, copy=True).mul_(SCB ...)`: the whole weight in the input's dtype.
- `MatMul4Bit.forward` up to bitsandbytes 0.43.1 ran `ctx.tensors = (A, B)` with A = `x.to(compute_dtype)`
  from `Linear4bit.forward` (nn/modules.py, 0.43.1): a new tensor per linear when x is not in the compute
  dtype, x itself when it is (`vramplan.stack.rules.bnb_4bit_keeps_matmul_inputs`).
A `ctx` attribute is not a saved tensor: torch.utils.checkpoint's non-reentrant saved-tensor hooks cannot
drop it, so under non-reentrant checkpointing every layer's inputs stay alive until that layer's backward;
reentrant checkpointing runs the forward without a graph, so only a recomputed layer holds them.
A node keeps nothing when no input needs grad (`ctx.needs_input_grad`): in layer 1 the attention-input
projections read the norm of an embedding output that needs no grad, unless checkpointing is reentrant
(which needs `enable_input_require_grads`) or the embedding trains.
Dense models only count their attention and MLP linears; MoE models their attention linears (the expert
inputs, per routed token, are not counted).
"""
from __future__ import annotations

from vramplan.memory.activations import embedding_output_requires_grad
from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes
from vramplan.memory.lora import targeted_linears
from vramplan.memory.terms import term

_SOURCE = "bitsandbytes/autograd/_functions.py (ctx.tensors)"


def holds_matmul_inputs(run, dtypes: RunDtypes) -> bool:
    """Whether this run's quantized linears hold their inputs: int8 always, NF4/FP4 on bitsandbytes < 0.43.2."""
    if not run.trains or not dtypes.base_quantized:
        return False
    if dtypes.weight_format == "int8":
        return True
    return dtypes.weight_format in ("nf4", "fp4") and dtypes.stack.bnb_4bit_keeps_inputs


def embedding_output_needs_grad(run, dtypes: RunDtypes) -> bool:
    """The embedding output needs grad: it trains, peft's float-base hook, or reentrant checkpointing
    (which only trains LoRA through `enable_input_require_grads`, peft/utils/other.py)."""
    return embedding_output_requires_grad(run) or (run.gradient_checkpointing and dtypes.stack.checkpoint_reentrant)


def _input_groups(model, dtypes: RunDtypes):
    """(names, in_features, input bytes, is the attention input) for each set of linears reading one input."""
    c = DTYPE_BYTES[dtypes.compute]
    norm_out = max(DTYPE_BYTES[dtypes.residual], DTYPE_BYTES[dtypes.float_weights])
    qkv = ("qkv_proj",) if model.fused_qkv else ("q_proj", "k_proj", "v_proj")
    groups = [(qkv, model.hidden_size, norm_out, True), (("o_proj",), model.q_dim, c, False)]
    if not model.is_moe:
        gate_up = ("gate_up_proj",) if model.fused_gate_up else ("gate_proj", "up_proj")
        groups += [(gate_up, model.hidden_size, norm_out, False), (("down_proj",), model.intermediate_size, norm_out, False)]
    return groups


def held_input_bytes_per_token(model, run, dtypes: RunDtypes, *, first_layer: bool = False):
    """Bytes per token of one layer's matmul inputs held on `ctx` beyond what its saved set already holds.

    Per set of linears reading one input of `in` features in x bytes: int8 holds the input itself (x in);
    old 4-bit holds `x.to(C)`: one shared C in when x is already C, else one C in copy per linear. Without
    checkpointing the saved set already holds the input when it is in C and a LoRA branch without dropout
    saves it (`activations._consumer_group_bytes`); `first_layer` leaves out the attention input when the
    embedding output needs no grad.
    """
    c = DTYPE_BYTES[dtypes.compute]
    lora_names = ({lin.name for lin in targeted_linears(model, run.lora_targets, dtypes.moe_experts)}
                  if run.uses_lora else set())
    held = 0
    for names, in_features, input_bytes, attention_input in _input_groups(model, dtypes):
        if first_layer and attention_input and not embedding_output_needs_grad(run, dtypes):
            continue
        aliased = input_bytes == c and (run.lora_dropout == 0 and bool(lora_names & set(names)))
        if aliased and not run.gradient_checkpointing:
            continue
        if dtypes.weight_format == "int8" or input_bytes == c:
            held += input_bytes * in_features
        else:
            held += len(names) * c * in_features
    return held


def held_input_terms(model, run, dtypes: RunDtypes, batch, seq) -> dict[str, list]:
    """{phase: terms} of the held inputs in each training phase (empty when nothing is held).

    No checkpointing: every layer's set (layer 1 without its attention input, `first_layer`) until its
    backward, layer 1's at the end. Non-reentrant checkpointing: the same, plus the top layer's recompute
    during its backward, and layer 1's forward and recompute sets at the end. Reentrant: only the
    recomputed layer's set (layer_backward, backward_end).
    """
    phases = {"forward": [], "loss_backward": [], "layer_backward": [], "backward_end": []}
    if not holds_matmul_inputs(run, dtypes):
        return phases
    per_layer = held_input_bytes_per_token(model, run, dtypes)
    first = held_input_bytes_per_token(model, run, dtypes, first_layer=True)
    layers = model.num_hidden_layers
    bs = (("b", batch), ("s", seq))

    def held(name, nbytes, *extra):
        return term(name, "B/token x b x s" + "".join(f" x {label}" for label, _ in extra),
                    (("B/token", nbytes),) + bs + extra, _SOURCE)

    every_layer = [held("ctx-held matmul inputs, layers 2..L", per_layer, ("layers", layers - 1)),
                   held("ctx-held matmul inputs, layer 1", first)]
    recompute = [held("ctx-held matmul inputs of the recomputed layer", per_layer)]
    if not run.gradient_checkpointing:
        phases.update(forward=every_layer, loss_backward=every_layer, layer_backward=every_layer,
                      backward_end=[held("ctx-held matmul inputs, layer 1", first)])
    elif not dtypes.stack.checkpoint_reentrant:
        phases.update(forward=every_layer, loss_backward=every_layer, layer_backward=every_layer + recompute,
                      backward_end=[held("ctx-held matmul inputs, layer 1 (forward and recompute)", first,
                                         ("sets", 2))])
    else:
        phases.update(layer_backward=recompute,
                      backward_end=[held("ctx-held matmul inputs of the recomputed layer 1", first)])
    return phases


def int8_backward_weight_copy_terms(model, dtypes: RunDtypes) -> list:
    """`MatMul8bitLt.backward`'s dequantized weight, `state.CB.to(ctx.dtype_A, copy=True)`: the whole weight
    of the largest decoder linear in its input's dtype (bitsandbytes/autograd/_functions.py, 0.50.2). Added on
    top of the layer's largest backward moment: an upper bound when that moment is not a linear's backward."""
    if dtypes.weight_format != "int8":
        return []
    c = DTYPE_BYTES[dtypes.compute]
    norm_out = max(DTYPE_BYTES[dtypes.residual], DTYPE_BYTES[dtypes.float_weights])
    out_features, in_features, input_bytes = max(
        ((lin.out_features, lin.in_features, c if lin.name == "o_proj" else norm_out)
         for lin in model.layer_linears(dtypes.moe_experts)), key=lambda shape: shape[0] * shape[1] * shape[2])
    return [term("int8 backward weight copy (CB.to(dtype_A))", "out x in x input bytes of the largest linear",
                 (("out", out_features), ("in", in_features), ("B (input dtype)", input_bytes)),
                 "bitsandbytes/autograd/_functions.py (MatMul8bitLt.backward)")]
