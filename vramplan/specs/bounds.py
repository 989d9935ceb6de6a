"""Upper bounds on every numeric input: far above any real run, far below where arithmetic breaks.

A value past its bound is refused where the spec is built (RunConfig, GPUSpec, ModelSpec), so an
absurd flag or config field is a one-line error instead of an int64 overflow, a minutes-long
search or an out-of-memory kill. Each bound is at least the solvers' own search limit
(`vramplan.solvers`: batch 4096, seq 2**20, rank 4096), so every answer a solver can give is
also a value `fit` accepts. The bounds do not keep every product below 2**63 (batch 2**20 x
seq 2**24 is already 2**44 tokens): memory arithmetic must stay exact past int64 on its own.
"""
from __future__ import annotations

# RunConfig fields. Why each is safe: the largest published runs use rank 2048, global batches of
# a few thousand sequences, 10M-token contexts (2**24 is 16.7M).
RUN_BOUNDS: dict[str, int] = {
    "lora_rank": 65_536,
    "lora_alpha": 1 << 20,
    "micro_batch_size": 1 << 20,
    "grad_accum_steps": 1 << 20,
    "seq_len": 1 << 24,
    "loss_chunks": 1 << 16,
    "max_new_tokens": 1 << 24,
    "group_size": 1 << 16,
}

# GPUSpec fields: the largest accelerator memory today is 288 GB (HBM3e) and 512 GB unified (Apple);
# 2**48 bytes is 256 TiB.
GPU_BOUNDS: dict[str, int] = {
    "total_memory_bytes": 1 << 48,
    "cuda_context_bytes": 1 << 40,
    "cublas_workspace_bytes": 1 << 40,
    "memory_bandwidth_gbps": 10**6,
}

# ModelSpec fields (config.json): the largest published configs have hidden 18432 (Llama-3.1-405B
# 16384), 128 layers, vocabularies of 262k, 256 experts. Wired by the spec module that owns them.
MODEL_BOUNDS: dict[str, int] = {
    "hidden_size": 1 << 20,
    "intermediate_size": 1 << 22,
    "num_hidden_layers": 1 << 14,
    "num_attention_heads": 1 << 14,
    "num_key_value_heads": 1 << 14,
    "head_dim": 1 << 16,
    "vocab_size": 1 << 24,
    "max_position_embeddings": 1 << 30,
    "num_local_experts": 1 << 16,
    "num_experts_per_tok": 1 << 16,
}


def bound_message(bound: int, unit: str = "") -> str:
    """The one wording every bound error uses."""
    power = f"2**{bound.bit_length() - 1} = " if bound & (bound - 1) == 0 else ""
    return f"must be at most {power}{bound:,}{unit} (no real run comes near it)"



def not_bool(value):
    """`value` itself, or ValueError when it is a bool: True is 1 in Python, never a size or count."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {value}")
    return value


def within_bound(value, name: str, bounds: dict[str, int]):
    """`value` itself (already validated as a number), or ValueError when it is above `bounds[name]`."""
    if value is not None and value > bounds[name]:
        raise ValueError(bound_message(bounds[name]))
    return value
