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

# ModelSpec fields: field -> (smallest, largest). The largest real values: hidden 18432 and
# intermediate 73728 (Nemotron-4-340B), 126 layers and 128 heads (Llama-3.1-405B), head_dim 256
# (Gemma), vocab 262208 (Gemma-3), 384 experts (Kimi-K2), a 10485760-token context (Llama-4-Scout).
# 0 for num_key_value_heads / head_dim means "derive it" (same as heads, hidden / heads).
MODEL_BOUNDS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, 1 << 17), "intermediate_size": (1, 1 << 20), "num_hidden_layers": (1, 1 << 12),
    "num_attention_heads": (1, 1 << 12), "num_key_value_heads": (0, 1 << 12), "head_dim": (0, 1 << 12),
    "vocab_size": (1, 1 << 24), "num_local_experts": (1, 1 << 12), "num_experts_per_tok": (1, 1 << 12),
    "norms_per_layer": (0, 1 << 4), "sliding_window": (0, 1 << 24), "sliding_window_pattern": (0, 1 << 12),
    "max_position_embeddings": (1, 1 << 24), "checkpoint_parameters": (0, 1 << 44),
}
MAX_PARAMETERS = 1 << 44  # 17.6e12 parameters in all: ten times the largest published model (Switch-C, ~1.6e12)


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


def bound_validators(bounds: dict[str, int]):
    """The two pydantic field validators that hold `bounds`' fields to it: bools refused before
    parsing (True is 1 in Python), then each value at most its bound. A spec class assigns them:
    `_not_bool, _within_bounds = bound_validators(RUN_BOUNDS)`."""
    from pydantic import field_validator

    def refuse_bool(cls, value):
        return not_bool(value)

    def at_most_bound(cls, value, info):
        return within_bound(value, info.field_name, bounds)

    return field_validator(*bounds, mode="before")(refuse_bool), field_validator(*bounds)(at_most_bound)
