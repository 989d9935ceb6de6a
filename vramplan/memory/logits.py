"""Logits and the cross-entropy loss: b x s x vocab, which dominates for 128k-256k vocabularies.

transformers' `ForCausalLMLoss` (transformers/loss/loss_utils.py) upcasts the logits to
fp32 (`logits.float()`) and runs `cross_entropy`, whose log_softmax saves its fp32 output.
Forward peak per token: logits (C) + fp32 copy (4) + log_softmax output (4) bytes x V.
Backward peak per token: saved log_softmax output + nll_loss grad + log_softmax grad =
12 bytes x V. Gemma-2's final soft-capping (tanh) saves one more compute-dtype copy.
Full fine-tuning adds the lm_head weight gradient (`head_weight_gradient_bytes`) and, for
tied embeddings, the two partial gradients of the shared weight (`tied_embedding_gradient_bytes`).
"chunked" is torchtune's CEWithChunkedOutputLoss: the compute-dtype logits stay whole,
the fp32 upcast and its gradients exist one chunk at a time.
"""
from __future__ import annotations

from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes
from vramplan.memory.terms import ALLOCATION, largest, term, total


def lm_head_cast_bytes(model, dtypes: RunDtypes) -> int:
    """The compute-dtype copy autocast makes of an fp32 lm_head weight; matmul saves it."""
    if DTYPE_BYTES[dtypes.float_weights] == DTYPE_BYTES[dtypes.compute]:
        return 0
    return model.vocab_size * model.hidden_size * DTYPE_BYTES[dtypes.compute]


def causal_lm_forward_per_vocab(loss_upcast: str, compute_bytes: int) -> tuple[str, str, int]:
    """(name, formula, bytes per token per vocab entry) of the standard loss' forward peak, by where
    transformers upcasts (`vramplan.stack.rules.causal_lm_loss_upcast`):
    - "loss" (>= 4.49): compute-dtype logits kept by the output + fp32 copy + log_softmax output: C + 4 + 4;
    - "loss_shifted_copy" (4.46 - 4.48): also `logits[..., :-1, :].contiguous()` of the fp32 copy: C + 4 + 4 + 4;
    - "model_forward" (< 4.46): `logits = logits.float()` in the model's forward frees the compute-dtype
      logits; fp32 logits + shifted fp32 copy + log_softmax output: 4 + 4 + 4.
    The backward peak (saved log_softmax output + nll grad + log_softmax grad, 12) is the same in all three:
    the fp32 logits and the shifted copy are not saved for backward and die with the loss function's frame.
    """
    if loss_upcast == "model_forward":
        return "fp32 logits + shifted fp32 copy + log_softmax", "4 + 4 + 4", 12
    if loss_upcast == "loss_shifted_copy":
        return "logits + fp32 copy + shifted fp32 copy + log_softmax", "C + 4 + 4 + 4", compute_bytes + 12
    return "logits + fp32 copy + log_softmax", "C + 4 + 4", compute_bytes + 8


def causal_lm_loss_source(loss_upcast: str) -> str:
    return {"model_forward": "transformers < 4.46 modeling_llama.py (logits.float(), shift_logits.contiguous())",
            "loss_shifted_copy": "transformers 4.46-4.48 loss/loss_utils.py (ForCausalLMLoss, shift_logits.contiguous())",
            }.get(loss_upcast, "transformers/loss/loss_utils.py (ForCausalLMLoss)")


def logits_loss_terms(model, run, dtypes: RunDtypes, micro_batch_size, seq_len) -> tuple[list, list]:
    """(forward peak, backward peak) terms of logits and loss for one micro-batch: B/token/vocab x b x s x V."""
    b, s, vocab = micro_batch_size, seq_len, model.vocab_size
    c = DTYPE_BYTES[dtypes.compute]
    softcap = c if model.final_logit_softcapping else 0
    source = "transformers/loss/loss_utils.py (ForCausalLMLoss)"

    def per_vocab(name, formula, nbytes):
        return term(name, formula, (("B/token/vocab", nbytes), ("b", b), ("s", s), ("V", vocab)), source)

    cap = " + soft-cap copy C" if softcap else ""
    if run.loss_impl == "chunked":
        chunks = run.loss_chunks
        source = "torchtune CEWithChunkedOutputLoss"
        forward = [per_vocab("logits (whole)", f"(C logits + 4 fp32 log-probs{cap}) x b x s x V", c + 4 + softcap),
                   term("fp32 upcast of one chunk", f"4 x b x s x V // {chunks} chunks",
                        (("B", 4 * b * s * vocab // chunks),), source)]
        backward = [per_vocab("saved log-probs", f"(4 fp32 log-probs{cap}) x b x s x V", 4 + softcap),
                    term("gradients of one chunk", f"8 x b x s x V // {chunks} chunks",
                         (("B", 8 * b * s * vocab // chunks),), source)]
    else:
        label, formula, nbytes = causal_lm_forward_per_vocab(dtypes.stack.loss_upcast, c)
        source = causal_lm_loss_source(dtypes.stack.loss_upcast)
        forward = [per_vocab(label, f"({formula}{cap}) x b x s x V", nbytes + softcap)]
        backward = [per_vocab("log_softmax output + nll grad + log_softmax grad", f"(4 + 4 + 4{cap}) x b x s x V",
                              12 + softcap)]
    head = []
    cast = lm_head_cast_bytes(model, dtypes)
    if cast:
        head.append(term("lm_head weight cast to compute dtype", "V x h x C",
                         (("V", vocab), ("h", model.hidden_size), ("C", c)), "autocast cached_cast"))
    if run.method == "full":  # a trainable lm_head saves its input
        head.append(term("lm_head input saved", "C x b x s x h", (("C", c), ("b", b), ("s", s), ("h", model.hidden_size)),
                         "torch.nn.functional.linear backward"))
        gradient = [head_weight_gradient_term(model, dtypes)]
        backward = largest("largest of loss backward and lm_head gradient", "max(loss backward, (C + T) x V x h)",
                           [backward + head, gradient])
        return forward + head, backward
    return forward + head, backward + head


def logits_loss_bytes(model, run, dtypes: RunDtypes, micro_batch_size, seq_len):
    """(forward peak, backward peak) bytes of logits and loss for one micro-batch."""
    forward, backward = logits_loss_terms(model, run, dtypes, micro_batch_size, seq_len)
    return total(forward), total(backward)


def head_weight_gradient_term(model, dtypes: RunDtypes):
    """Full fine-tuning: the lm_head weight gradient forms in the compute dtype (the matmul
    under autocast) and is cast to the trainable dtype while the first still exists:
    (C + T) x vocab x hidden. The trace simulator showed this moment is the loss-backward
    peak for large vocabularies (Gemma-2 2B: +4% over the 12 B/token/vocab term alone).
    """
    trainable = DTYPE_BYTES[dtypes.trainable]
    c = DTYPE_BYTES[dtypes.compute]
    extra = c if c != trainable else 0
    return term("lm_head weight gradient", "(C + T) x V x h",
                (("C + T", extra + trainable), ("V", model.vocab_size), ("h", model.hidden_size)),
                "trace simulator (Gemma-2 2B full fine-tuning)")


def head_weight_gradient_bytes(model, dtypes: RunDtypes) -> int:
    """Bytes of `head_weight_gradient_term`."""
    return head_weight_gradient_term(model, dtypes).bytes


def tied_embedding_gradient_terms(model, run, dtypes: RunDtypes) -> list:
    """Full fine-tuning of tied embeddings: autograd holds the lm_head's gradient of the shared
    weight in its input buffer until the embedding's dense gradient arrives, then sums the two
    out of place (torch/csrc/autograd/input_buffer.cpp): two extra vocab x hidden gradients in
    the trainable dtype at the end of backward (tests/test_memory_from_simulator.py checks it
    against the trace simulator on Gemma-2 2B full fine-tuning)."""
    if run.method != "full" or not model.tie_word_embeddings:
        return []
    return [term("tied embedding partial gradients", "2 tensors x V x h x T",
                 (("tensors", 2), ("elements", model.vocab_size * model.hidden_size), ("T", DTYPE_BYTES[dtypes.trainable])),
                 "torch/csrc/autograd/input_buffer.cpp", rounding=ALLOCATION)]


def tied_embedding_gradient_bytes(model, run, dtypes: RunDtypes) -> int:
    """Bytes of `tied_embedding_gradient_terms`."""
    return total(tied_embedding_gradient_terms(model, run, dtypes))


def inference_logits_bytes(model, dtypes: RunDtypes, micro_batch_size):
    """Prefill computes logits for the last position only (`logits_to_keep=1`) and
    `generate` copies them to fp32 for sampling (transformers/generation/utils.py)."""
    return micro_batch_size * model.vocab_size * (DTYPE_BYTES[dtypes.compute] + 4)
