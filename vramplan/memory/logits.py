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
from vramplan.memory.xp import allocation_bytes, maximum


def lm_head_cast_bytes(model, dtypes: RunDtypes) -> int:
    """The compute-dtype copy autocast makes of an fp32 lm_head weight; matmul saves it."""
    if DTYPE_BYTES[dtypes.float_weights] == DTYPE_BYTES[dtypes.compute]:
        return 0
    return model.vocab_size * model.hidden_size * DTYPE_BYTES[dtypes.compute]


def logits_loss_bytes(model, run, dtypes: RunDtypes, micro_batch_size, seq_len):
    """(forward peak, backward peak) bytes of logits and loss for one micro-batch."""
    tokens = micro_batch_size * seq_len
    vocab = model.vocab_size
    c = DTYPE_BYTES[dtypes.compute]
    softcap = c if model.final_logit_softcapping else 0
    if run.loss_impl == "chunked":
        chunks = run.loss_chunks
        forward = (c + 4 + softcap) * tokens * vocab + 4 * tokens * vocab // chunks
        backward = (4 + softcap) * tokens * vocab + 8 * tokens * vocab // chunks
    else:
        forward = (c + 8 + softcap) * tokens * vocab
        backward = (12 + softcap) * tokens * vocab
    head = lm_head_cast_bytes(model, dtypes)
    if run.method == "full":  # a trainable lm_head saves its input
        head = head + c * tokens * model.hidden_size
        backward = maximum(backward + head, head_weight_gradient_bytes(model, dtypes))
        return forward + head, backward
    return forward + head, backward + head


def head_weight_gradient_bytes(model, dtypes: RunDtypes) -> int:
    """Full fine-tuning: the lm_head weight gradient forms in the compute dtype (the matmul
    under autocast) and is cast to the trainable dtype while the first still exists:
    (C + T) x vocab x hidden. The trace simulator showed this moment is the loss-backward
    peak for large vocabularies (Gemma-2 2B: +4% over the 12 B/token/vocab term alone).
    """
    trainable = DTYPE_BYTES[dtypes.trainable]
    c = DTYPE_BYTES[dtypes.compute]
    extra = c if c != trainable else 0
    return (extra + trainable) * model.vocab_size * model.hidden_size


def tied_embedding_gradient_bytes(model, run, dtypes: RunDtypes) -> int:
    """Full fine-tuning of tied embeddings: autograd holds the lm_head's gradient of the shared
    weight in its input buffer until the embedding's dense gradient arrives, then sums the two
    out of place (torch/csrc/autograd/input_buffer.cpp): two extra vocab x hidden gradients in
    the trainable dtype at the end of backward. Found by the trace simulator (Gemma-2 2B full
    fine-tuning: the analytic model was 9.6% under at the end of backward)."""
    if run.method != "full" or not model.tie_word_embeddings:
        return 0
    return 2 * allocation_bytes(model.vocab_size * model.hidden_size * DTYPE_BYTES[dtypes.trainable])


def inference_logits_bytes(model, dtypes: RunDtypes, micro_batch_size):
    """Prefill computes logits for the last position only (`logits_to_keep=1`) and
    `generate` copies them to fp32 for sampling (transformers/generation/utils.py)."""
    return micro_batch_size * model.vocab_size * (DTYPE_BYTES[dtypes.compute] + 4)
