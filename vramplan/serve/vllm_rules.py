"""vLLM's start-up arithmetic for the KV cache pool, one pure function per rule.

Followed: vLLM's V1 engine, `vllm serve`, as of v0.15. Read from vllm-project/vllm (the snapshot in the
workplace's code index, main after v0.15): `vllm/v1/core/kv_cache_utils.py` (get_num_blocks, the hybrid
grouping, the start-up check and its error text, the max-model-len estimate, the concurrency line, the
"GPU KV cache size" log), `vllm/v1/kv_cache_interface.py` (page_size_bytes, max_memory_usage_bytes per
attention type), `vllm/v1/worker/gpu_worker.py` (determine_available_memory), `vllm/config/cache.py`
(block size 16, gpu_memory_utilization 0.9) and `vllm/engine/arg_utils.py` (batch defaults). The error text
is the one vLLM 0.15.2 printed in issue 34076. The pool is total x utilization - (weights + activation peak
+ non-torch), the three terms of v0.1x's "Actual usage is ... for weight, ... for peak activation, ... for
non-torch memory, and ... for CUDAGraph memory" log; CUDA graphs are captured after the pool is allocated
and sit outside it. Later versions profile CUDA graphs into the budget (the default since v0.21.0); this
module does not follow them.

Bytes are per GPU (one tensor-parallel shard). No I/O, no printing.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
VLLM_VERSION = "0.15"
DEFAULT_BLOCK_SIZE = 16  # vllm/config/cache.py CacheConfig.block_size default on CUDA
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vllm/config/cache.py
CONSERVING_MEMORY_URL = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"


def cdiv(a: int, b: int) -> int:
    """vllm/utils/math_utils.py cdiv: -(a // -b)."""
    return -(a // -b)


def format_gib(nbytes: int) -> float:
    """vllm/utils/mem_utils.py format_gib: round(bytes / GiB, 2) - printed as a float (24.0, 10.12)."""
    return round(nbytes / GIB, 2)


def default_batch_limits(total_memory_bytes: int, device_name: str) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) `vllm serve` picks when not given: 8192 and 1024 on a GPU
    with >= 70 GiB whose name has no "a100", else 2048 and 256 (vllm/engine/arg_utils.py,
    UsageContext.OPENAI_API_SERVER)."""
    if total_memory_bytes >= 70 * GIB and "a100" not in device_name.lower():
        return 8192, 1024
    return 2048, 256


def kv_heads_per_gpu(num_key_value_heads: int, tensor_parallel_size: int) -> int:
    """max(1, kv_heads // tp): KV heads are split over TP ranks and replicated when TP exceeds them
    (vllm/config/model.py ModelConfig.get_num_kv_heads)."""
    return max(1, num_key_value_heads // tensor_parallel_size)


def page_size_bytes(block_size: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """One layer's block: 2 (K and V) x block_size x kv_heads x head_dim x dtype bytes
    (vllm/v1/kv_cache_interface.py AttentionSpec.real_page_size_bytes)."""
    return 2 * block_size * num_kv_heads * head_dim * dtype_bytes


def full_attention_blocks(max_model_len: int, block_size: int) -> int:
    """Blocks one request needs in a full-attention layer: cdiv(max_model_len, block_size)
    (FullAttentionSpec.max_memory_usage_bytes)."""
    return cdiv(max_model_len, block_size)


def sliding_window_blocks(max_model_len: int, block_size: int, sliding_window: int, max_num_batched_tokens: int) -> int:
    """Blocks one request needs in a sliding-window layer: cdiv(min(window - 1 + max_num_batched_tokens,
    max_model_len), block_size) + 1, the +1 for a window that starts mid-block
    (SlidingWindowSpec.max_memory_usage_bytes)."""
    tokens = min(sliding_window - 1 + max_num_batched_tokens, max_model_len)
    return cdiv(tokens, block_size) + 1


@dataclass(frozen=True)
class KVLayout:
    """Attention layers of one GPU shard and how vLLM groups them.

    One attention type: one group of all layers. Full plus sliding-window layers with one page size
    (Gemma-2/3): groups of `group_size` layers, group_size = the smaller layer count, or the larger
    one when it is under 1.5 x the smaller (kv_cache_utils._get_kv_cache_groups_uniform_page_size)."""

    full_layers: int
    sliding_layers: int
    sliding_window: int
    page_bytes: int  # one layer's block

    @property
    def group_size(self) -> int:
        counts = [n for n in (self.full_layers, self.sliding_layers) if n]
        smallest, largest = min(counts), max(counts)
        return largest if largest < smallest * 1.5 else smallest

    @property
    def full_groups(self) -> int:
        return cdiv(self.full_layers, self.group_size) if self.full_layers else 0

    @property
    def sliding_groups(self) -> int:
        return cdiv(self.sliding_layers, self.group_size) if self.sliding_layers else 0

    @property
    def num_groups(self) -> int:
        return self.full_groups + self.sliding_groups

    @property
    def block_bytes(self) -> int:
        """Bytes one block id costs across the pool: page size x group size."""
        return self.page_bytes * self.group_size


def num_gpu_blocks(available_bytes: int, layout: KVLayout) -> int:
    """max(available // page_size // group_size, 0) (kv_cache_utils.get_num_blocks)."""
    return max(available_bytes // layout.page_bytes // layout.group_size, 0)


def kv_cache_tokens(num_blocks: int, layout: KVLayout, block_size: int) -> int:
    """The logged "GPU KV cache size: N tokens": num_blocks // groups x block_size
    (kv_cache_utils._report_kv_cache_config)."""
    return num_blocks // layout.num_groups * block_size


def blocks_per_request(layout: KVLayout, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
    """Block ids one max_model_len request holds: the sum over groups of each group's blocks
    (get_max_concurrency_for_kv_cache_config: cdiv(group_size x sum of per-layer usage, page x group_size))."""
    full = layout.full_groups * full_attention_blocks(max_model_len, block_size)
    sliding = layout.sliding_groups * (
        sliding_window_blocks(max_model_len, block_size, layout.sliding_window, max_num_batched_tokens)
        if layout.sliding_layers else 0)
    return full + sliding


def max_concurrency(num_blocks: int, layout: KVLayout, max_model_len: int, block_size: int,
                    max_num_batched_tokens: int) -> float:
    """"Maximum concurrency for {max_model_len} tokens per request: {x:.2f}x" = num_blocks / blocks per
    request (kv_cache_utils.get_max_concurrency_for_kv_cache_config)."""
    return num_blocks / blocks_per_request(layout, max_model_len, block_size, max_num_batched_tokens)


def needed_kv_bytes(layout: KVLayout, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
    """KV bytes one max_model_len request needs: group_size x page x the blocks it holds over all groups,
    padding layers included (kv_cache_utils._max_memory_usage_bytes_from_groups, which the start-up check
    and estimate_max_model_len use)."""
    return layout.block_bytes * blocks_per_request(layout, max_model_len, block_size, max_num_batched_tokens)


def estimate_max_model_len(layout: KVLayout, available_bytes: int, max_model_len: int, block_size: int,
                           max_num_batched_tokens: int) -> int:
    """Largest length in 1..max_model_len whose needed_kv_bytes fits `available_bytes`, 0 if none: the
    binary search of kv_cache_utils._estimate_max_model_len_from_groups (needed bytes never fall as the
    length grows)."""
    def fits(length: int) -> bool:
        return needed_kv_bytes(layout, length, block_size, max_num_batched_tokens) <= available_bytes

    if not fits(1):
        return 0
    low, high, best = 1, max_model_len, 1
    while low <= high:
        middle = (low + high) // 2
        if fits(middle):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def not_enough_kv_cache_error(max_model_len: int, needed_bytes: int, available_bytes: int,
                              estimated_max_len: int) -> str:
    """The ValueError vLLM raises at start-up when one max_model_len request does not fit the pool
    (kv_cache_utils._check_enough_kv_cache_memory, the text as vLLM 0.15 prints it)."""
    if available_bytes <= 0:
        return ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                f"initializing the engine. See {CONSERVING_MEMORY_URL} for more details.")
    estimated = (f"Based on the available memory, the estimated maximum model length is {estimated_max_len}. "
                 if estimated_max_len > 0 else "")
    return (f"To serve at least one request with the models's max seq len ({max_model_len}), "
            f"({format_gib(needed_bytes)} GiB KV cache is needed, which is larger than the available KV cache "
            f"memory ({format_gib(available_bytes)} GiB). {estimated}Try increasing `gpu_memory_utilization` or "
            f"decreasing `max_model_len` when initializing the engine. See {CONSERVING_MEMORY_URL} for more details.")


def requested_memory_bytes(total_memory_bytes: int, gpu_memory_utilization: float) -> int:
    """total x gpu_memory_utilization: the budget vLLM may use (gpu_worker.py, requested_memory)."""
    return int(total_memory_bytes * gpu_memory_utilization)


def startup_free_memory_error(free_bytes: int, total_bytes: int, gpu_memory_utilization: float) -> str:
    """The ValueError when the device has less free memory at start than total x utilization
    (vllm/v1/worker/gpu_worker.py init_device; the text as published logs of 0.11+ print it, rank 0's device)."""
    requested = requested_memory_bytes(total_bytes, gpu_memory_utilization)
    return (f"Free memory on device cuda:0 ({format_gib(free_bytes)}/{format_gib(total_bytes)} GiB) on startup is less "
            f"than desired GPU memory utilization ({gpu_memory_utilization}, {format_gib(requested)} GiB). "
            "Decrease GPU memory utilization or reduce GPU memory used by other processes.")


def available_kv_cache_bytes(requested_bytes: int, weights_bytes: int, activation_peak_bytes: int,
                             non_torch_bytes: int) -> int:
    """requested - (weights + profiled activation peak + non-torch increase): "Available KV cache memory"
    (gpu_worker.determine_available_memory with vllm/utils/mem_utils.py memory_profiling's
    non_kv_cache_memory)."""
    return requested_bytes - (weights_bytes + activation_peak_bytes + non_torch_bytes)
