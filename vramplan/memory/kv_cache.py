"""KV cache for inference, GQA-aware.

bytes = 2 (K and V) x layers x batch x tokens x num_key_value_heads x head_dim x dtype
bytes (Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2). transformers'
DynamicCache grows by `torch.cat`, so each step briefly holds one layer's old and new K.
"""
from __future__ import annotations

from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes


def kv_cache_bytes(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    return (2 * model.num_hidden_layers * micro_batch_size * total_tokens
            * model.kv_dim * DTYPE_BYTES[dtypes.kv_cache])


def kv_cache_growth_transient(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    """One layer's K (or V) copied by torch.cat while the old one is still referenced."""
    return micro_batch_size * total_tokens * model.kv_dim * DTYPE_BYTES[dtypes.kv_cache]
