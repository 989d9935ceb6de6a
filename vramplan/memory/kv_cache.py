"""KV cache for inference, GQA-aware.

bytes = 2 (K and V) x layers x batch x tokens x num_key_value_heads x head_dim x dtype
bytes (Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2); sliding-window layers
(Gemma-2/3, Mistral-7B-v0.1) hold at most their window (`cached_layer_tokens`). transformers'
DynamicCache grows by `torch.cat`, so each step briefly holds one layer's old and new K.
"""
from __future__ import annotations

from vramplan.memory.dtypes import DTYPE_BYTES, RunDtypes
from vramplan.memory.terms import term
from vramplan.memory.xp import maximum


def cached_layer_tokens(model, total_tokens):
    """Tokens held per sequence, summed over layers: global layers keep all `total_tokens`, sliding-window
    layers min(window, total_tokens) - transformers' StaticSlidingWindowLayer allocates
    min(sliding_window, max_cache_len) (cache_utils.py; DynamicSlidingWindowLayer keeps window - 1)."""
    local = model.sliding_window_layers
    if not local:
        return model.num_hidden_layers * total_tokens
    window_tokens = total_tokens - maximum(total_tokens - model.sliding_window, 0)  # min(), arrays too
    return (model.num_hidden_layers - local) * total_tokens + local * window_tokens


def kv_cache_term(model, dtypes: RunDtypes, micro_batch_size, total_tokens):
    dtype = (f"B ({dtypes.kv_cache})", DTYPE_BYTES[dtypes.kv_cache])
    if model.sliding_window_layers:
        held = ("layer-tokens", cached_layer_tokens(model, total_tokens))
        return term("K and V", "2 x b x layer-tokens (global layers x tokens + window layers x min(window, tokens))"
                    " x kv_dim x dtype",
                    (("K and V", 2), ("b", micro_batch_size), held, ("kv_dim", model.kv_dim), dtype),
                    "Pope et al. 2022, §2; transformers cache_utils.py sliding-window layers")
    return term("K and V", "2 x layers x b x tokens x kv_dim x dtype",
                (("K and V", 2), ("layers", model.num_hidden_layers), ("b", micro_batch_size), ("tokens", total_tokens),
                 ("kv_dim", model.kv_dim), dtype),
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
