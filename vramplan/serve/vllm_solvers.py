"""Answers on top of the vLLM plan: the largest max-model-len, the most concurrent requests, the smallest
GPU, and advice in cost order when vLLM would not start."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from vramplan.errors import InputError
from vramplan.serve.vllm import VllmSettings, plan_vllm

SMALLER_FORMATS = {"bf16": "awq-4bit", "fp16": "awq-4bit", "fp32": "awq-4bit", "int8": "awq-4bit",
                   "gptq-8bit": "gptq-4bit"}


def max_context(model, gpu, settings: VllmSettings) -> int:
    """The largest --max-model-len vLLM starts with (0: none), up to the model's max_position_embeddings.
    The pool does not depend on max_model_len (V1 profiles max_num_batched_tokens), so this is vLLM's own
    estimate_max_model_len over the whole range."""
    return plan_vllm(model, gpu, settings).largest_max_model_len


def max_concurrent_requests(model, gpu, settings: VllmSettings, request_len: int | None = None) -> int:
    """Requests of `request_len` tokens (default max_model_len) the pool holds at once, capped by
    max_num_seqs: min(floor(vLLM's maximum concurrency), max_num_seqs)."""
    if request_len is not None:
        settings = replace(settings, typical_len=request_len)
    plan = plan_vllm(model, gpu, settings)
    concurrency = plan.max_concurrency if request_len is None else plan.concurrency_at_typical
    return min(math.floor(concurrency), plan.max_num_seqs) if plan.fits else 0


VLLM_VENDORS = ("nvidia", "amd")  # vLLM's CUDA and ROCm builds; Apple GPUs are not among its platforms


def smallest_gpu(model, gpus, settings: VllmSettings):
    """The NVIDIA or AMD GPU profile with the least memory on which vLLM starts, or None."""
    for gpu in sorted((g for g in gpus if g.vendor in VLLM_VENDORS), key=lambda g: g.total_memory_bytes):
        try:
            if plan_vllm(model, gpu, settings).fits:
                return gpu
        except InputError:  # a GPU that cannot run this format is no candidate
            continue
    return None


@dataclass(frozen=True)
class Change:
    """One way to make vLLM start, with the flags to pass and what the pool then holds."""

    name: str
    flags: str
    kv_cache_tokens: int
    max_concurrency: float


def _try(model, gpu, settings: VllmSettings, name: str, flags: str, changed: VllmSettings) -> Change | None:
    plan = plan_vllm(model, gpu, changed)
    return Change(name, flags, plan.kv_cache_tokens, plan.max_concurrency) if plan.fits else None


def advise(model, gpu, settings: VllmSettings, gpus=()) -> list[Change]:
    """Changes that make vLLM start, cheapest first: (when the share asked for exceeds the free memory) a
    lower gpu-memory-utilization, an fp8 KV cache, a shorter max-model-len, fewer sequences and batched
    tokens, tensor parallelism, a smaller quant type, a larger GPU."""
    plan = plan_vllm(model, gpu, settings)
    if plan.fits:
        return []
    found: list[Change | None] = []
    if plan.requested_bytes > plan.total_memory_bytes - plan.cuda_context_bytes:
        # the CUDA context holds part of the GPU before vLLM asks for its share: ask for what is free
        utilization = math.floor((plan.total_memory_bytes - plan.cuda_context_bytes) / plan.total_memory_bytes * 100) / 100
        found.append(_try(model, gpu, settings, "a gpu-memory-utilization the free memory allows",
                          f"--gpu-memory-utilization {utilization:g}",
                          replace(settings, gpu_memory_utilization=utilization)))
    if plan.kv_cache_dtype != "fp8":
        found.append(_try(model, gpu, settings, "fp8 KV cache (half the bytes per token)", "--kv-cache-dtype fp8",
                          replace(settings, kv_cache_dtype="fp8")))
    if plan.largest_max_model_len > 0:
        length = plan.largest_max_model_len
        found.append(_try(model, gpu, settings, "a shorter max-model-len", f"--max-model-len {length}",
                          replace(settings, max_model_len=length)))
    if plan.max_num_seqs > 64 or plan.max_num_batched_tokens > 512:
        seqs, tokens = min(plan.max_num_seqs, 64), min(plan.max_num_batched_tokens, 512)
        found.append(_try(model, gpu, settings, "fewer sequences and a smaller profiled batch",
                          f"--max-num-seqs {seqs} --max-num-batched-tokens {tokens}",
                          replace(settings, max_num_seqs=seqs, max_num_batched_tokens=tokens)))
    for tp in (2, 4, 8):
        if tp > plan.tensor_parallel_size and model.num_attention_heads % tp == 0:
            change = _try(model, gpu, settings, f"tensor parallelism over {tp} GPUs", f"--tensor-parallel-size {tp}",
                          replace(settings, tensor_parallel_size=tp))
            if change:
                found.append(change)
                break
    smaller = SMALLER_FORMATS.get(plan.weight_format)
    if smaller:
        found.append(_try(model, gpu, settings, f"a smaller quant type ({smaller})", f"--format {smaller}",
                          replace(settings, weight_format=smaller, quantization=None)))
    bigger = smallest_gpu(model, [g for g in gpus if g.total_memory_bytes > gpu.total_memory_bytes], settings)
    if bigger is not None:
        changed = plan_vllm(model, bigger, settings)
        found.append(Change(f"a larger GPU ({bigger.key})", f"--gpu {bigger.key}", changed.kv_cache_tokens,
                            changed.max_concurrency))
    return [change for change in found if change is not None]
