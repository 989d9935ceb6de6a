"""The model one tensor-parallel rank holds: Megatron-style column/row splits of every linear.

Under tensor parallelism of degree T (Shoeybi et al. 2019, Megatron-LM; transformers' `tp_plan`
"colwise"/"rowwise"; vLLM's ColumnParallelLinear/RowParallelLinear) a rank holds
- q/k/v and gate/up split by output (column parallel) and o/down split by input (row parallel):
  the same as a model with a/T attention heads, k/T key-value heads (at least one: vLLM
  replicates a KV head when T > k, vllm/model_executor/layers/linear.py QKVParallelLinear) and
  intermediate i/T;
- the embedding and lm_head split over the vocabulary (VocabParallelEmbedding, padded up);
- every norm whole (replicated).
So the rank's slice is a ModelSpec with those counts and the same hidden size; every memory term
(weights, LoRA A replicated / B split on column layers and the reverse on row layers, optimizer
state, KV cache, logits) then follows from the single-GPU formulas. Its activations are Korthikanti
et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", eq. 2) without
sequence parallelism: the h-sized tensors (norm inputs, the residual stream, the inputs of the
column-parallel linears) are whole on every rank, the attention (heads) and MLP (intermediate)
tensors are divided by T.
"""
from __future__ import annotations

from vramplan.errors import InputError
from vramplan.specs import ModelSpec


def tensor_parallel_slice(model: ModelSpec, tensor_parallel: int) -> ModelSpec:
    """The ModelSpec of one rank's share of `model` under T-way tensor parallelism (module docstring)."""
    t = tensor_parallel
    if t == 1:
        return model
    if model.num_attention_heads % t:
        raise InputError("tensor_parallel", f"{t} must divide {model.name}'s {model.num_attention_heads} attention heads")
    kv = model.num_key_value_heads
    if kv >= t and kv % t:
        raise InputError("tensor_parallel", f"{t} must divide {model.name}'s {kv} key-value heads (or exceed them)")
    heads = model.num_attention_heads // t
    return model.model_copy(update={
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, kv // t),
        "head_dim": model.head_dim,
        "intermediate_size": -(-model.intermediate_size // t),
        "vocab_size": -(-model.vocab_size // t),
        "checkpoint_parameters": 0,
    })
