"""Which of a rank's components each strategy divides over the shard group, and the sharded term.

| component            | ddp | zero1 | zero2 | fsdp-grad-op, fsdp, fsdp-hybrid, zero3 |
|----------------------|-----|-------|-------|----------------------------------------|
| frozen + trainable parameters (quantized codes, float weights, LoRA) | whole | whole | whole | 1/N |
| gradients            | whole | whole | 1/N | 1/N |
| optimizer state and step temporaries | whole | 1/N | 1/N | 1/N |
| quantization state (absmax, nested absmax, code) | whole on every strategy |

- ZeRO stages: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
  Parameter Models", P_os / P_os+g / P_os+g+p (deepspeed/runtime/zero/stage_1_and_2.py, stage3.py, 0.19.8).
- FSDP FULL_SHARD / fully_shard and SHARD_GRAD_OP keep only the shard at rest
  (torch/distributed/fsdp/_flat_param.py FlatParamHandle; _fully_shard/_fsdp_param.py, torch 2.13);
  SHARD_GRAD_OP keeps the unsharded parameters from forward to the end of backward (units.py).
  HYBRID_SHARD shards within a node and replicates across nodes (N = GPUs per node / T).
- The quantization state stays whole: bitsandbytes keeps it in `Params4bit.quant_state`, a Python
  attribute, not a parameter or buffer, so neither FSDP nor ZeRO-3 partitions it
  (bitsandbytes/nn/modules.py, 0.50; with `bnb_4bit_quant_storage` only the packed codes become a
  flattenable parameter).
N is the shard count (`ParallelConfig.shard_count`); a shard is ceil(bytes / N) (FSDP and ZeRO pad
every flat buffer to a multiple of N).
"""
from __future__ import annotations

from vramplan.memory.terms import SHARD, term
from vramplan.specs.parallel import ParallelConfig

PARAMETER_COMPONENTS = ("quantized_weights", "float_weights", "lora_adapters")
OPTIMIZER_COMPONENTS = ("optimizer_state", "optimizer_step_temp")

_PARAMETERS_SHARDED = ("fsdp", "fsdp-grad-op", "fsdp-hybrid", "zero3")
_GRADIENTS_SHARDED = ("zero2", *_PARAMETERS_SHARDED)
_OPTIMIZER_SHARDED = ("zero1", *_GRADIENTS_SHARDED)


def shards_parameters(strategy: str) -> bool:
    return strategy in _PARAMETERS_SHARDED


def shards_gradients(strategy: str) -> bool:
    return strategy in _GRADIENTS_SHARDED


def shards_optimizer(strategy: str) -> bool:
    return strategy in _OPTIMIZER_SHARDED


def component_divisor(component: str, parallel: ParallelConfig) -> int:
    """How many ranks share `component` (1: every rank holds it whole); the table in the module docstring."""
    strategy, n = parallel.resolved_strategy, parallel.shard_count
    if component in PARAMETER_COMPONENTS:
        return n if shards_parameters(strategy) else 1
    if component == "gradients":
        return n if shards_gradients(strategy) else 1
    if component in OPTIMIZER_COMPONENTS:
        return n if shards_optimizer(strategy) else 1
    return 1


def shard_bytes(nbytes: int, shards: int) -> int:
    """One rank's share of a buffer padded to a multiple of `shards`: ceil(bytes / N)."""
    return -(-int(nbytes) // shards)


def sharded_term(item, shards: int, source: str):
    """`item` (a Term) as one rank's 1/N shard: a term of two factors, the whole bytes and 1/N rounded up."""
    if shards == 1:
        return item
    return term(f"{item.name}, 1/{shards} shard", f"({item.formula}) / N ranks, rounded up",
                (("B", int(item.bytes)), ("ranks", shards)), source or item.source, rounding=SHARD)


def sharded_terms(items, shards: int, source: str) -> list:
    return [sharded_term(item, shards, source) for item in items]
