"""KV cache for inference, GQA-aware.

bytes = 2 (K and V) x layers x batch x tokens x num_key_value_heads x head_dim x dtype
bytes (Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2). transformers'
DynamicCache grows by `torch.cat`, so each step briefly holds one layer's old and new K.
"""
from __future__ import annotations

from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes
from vramplan.memory.terms import term


def kv_cache_term(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    return term("K and V", "2 x layers x b x tokens x kv_dim x dtype",
                (("K and V", 2), ("layers", model.num_hidden_layers), ("b", micro_batch_size), ("tokens", total_tokens),
                 ("kv_dim", model.kv_dim), (f"B ({dtypes.kv_cache})", DTYPE_BYTES[dtypes.kv_cache])),
                "Pope et al. 2022, §2")


def kv_cache_bytes(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    return kv_cache_term(model, dtypes, micro_batch_size, total_tokens).bytes


def kv_cache_growth_term(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    """One layer's K (or V) copied by torch.cat while the old one is still referenced."""
    return term("KV cache growth (torch.cat copy of one layer's K)", "b x tokens x kv_dim x dtype",
                (("b", micro_batch_size), ("tokens", total_tokens), ("kv_dim", model.kv_dim),
                 (f"B ({dtypes.kv_cache})", DTYPE_BYTES[dtypes.kv_cache])), "transformers DynamicCache")


def kv_cache_growth_transient(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    """One layer's K (or V) copied by torch.cat while the old one is still referenced."""
    return kv_cache_growth_term(model, dtypes, micro_batch_size, total_tokens).bytes
