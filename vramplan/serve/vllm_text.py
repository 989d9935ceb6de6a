"""The vLLM plan as text: the memory table, the lines vLLM itself would log, and the start-up error."""
from __future__ import annotations

from vramplan.present import gib, table


def _quantization(plan) -> str:
    return f" (--quantization {plan.quantization})" if plan.quantization else ""


def memory_rows(plan) -> list[list[str]]:
    eager = "--enforce-eager: none" if plan.enforce_eager else "lower-bound estimate, outside the pool"
    return [
        ["GPU memory (total)", gib(plan.total_memory_bytes), ""],
        [f"requested (x {plan.gpu_memory_utilization:g})", gib(plan.requested_bytes), "total x gpu_memory_utilization"],
        ["weights per GPU", gib(plan.weights_bytes), f"{plan.weight_format}, / TP {plan.tensor_parallel_size}"],
        ["activation peak (profiled)", gib(plan.activation_peak_bytes),
         f"estimate: {plan.max_num_batched_tokens} tokens + sampler for {plan.max_num_seqs} seqs"],
        ["non-torch memory", gib(plan.non_torch_bytes), "estimate from published logs"],
        ["KV cache pool", gib(max(plan.available_kv_bytes, 0)), "requested - the three above"],
        ["CUDA graphs", gib(plan.cuda_graph_bytes), eager],
        ["CUDA context", gib(plan.cuda_context_bytes), "outside the requested share"],
    ]


def vllm_log_lines(plan) -> list[str]:
    """The start-up lines vLLM prints for this pool (gpu_worker.py, kv_cache_utils._report_kv_cache_config)."""
    return [
        f"Available KV cache memory: {plan.available_kv_bytes / 2**30:.2f} GiB",
        f"GPU KV cache size: {plan.kv_cache_tokens:,} tokens",
        f"Maximum concurrency for {plan.max_model_len:,} tokens per request: {plan.max_concurrency:.2f}x",
    ]


def block_line(plan) -> str:
    kv_bytes = 1 if plan.kv_cache_dtype == "fp8" else 2
    layers = f"{plan.full_layers} full"
    if plan.sliding_layers:
        layers += f" + {plan.sliding_layers} sliding-window ({plan.sliding_window} tokens), {plan.kv_groups} groups"
    return (f"page: 2 x {plan.block_size} tokens x {plan.kv_heads_per_gpu} KV heads x {plan.head_dim} x {kv_bytes} B = "
            f"{plan.page_bytes:,} B per layer per block; layers: {layers}; {plan.num_blocks:,} blocks "
            f"of {plan.block_bytes:,} B")


def render_plan(plan) -> str:
    head = (f"{plan.model} on {plan.gpu} x {plan.tensor_parallel_size}, vLLM {plan.vllm_version} rules: "
            f"{plan.weight_format}{_quantization(plan)}, max-model-len {plan.max_model_len:,}, "
            f"kv-cache-dtype {plan.kv_cache_dtype}")
    if plan.fits:
        verdict = (f"STARTS: KV pool {gib(plan.available_kv_bytes)} GiB holds {plan.kv_cache_tokens:,} tokens; "
                   f"{min(int(plan.max_concurrency), plan.max_num_seqs)} concurrent {plan.max_model_len:,}-token "
                   f"requests, {min(int(plan.concurrency_at_typical), plan.max_num_seqs)} at {plan.typical_len:,} tokens")
    else:
        verdict = f"WOULD NOT START: ValueError: {plan.startup_error}"
    lines = [head, verdict, "", table(["per GPU", "GiB", "how"], memory_rows(plan)), "",
             "vLLM would log:", *(f"  {line}" for line in vllm_log_lines(plan)),
             f"  (at {plan.typical_len:,} tokens per request: {plan.concurrency_at_typical:.2f}x)",
             block_line(plan),
             f"largest max-model-len that starts: {plan.largest_max_model_len:,}"]
    lines.extend(f"warning: {warning}" for warning in plan.warnings)
    return "\n".join(lines)


def render_advice(changes) -> str:
    if not changes:
        return ""
    rows = [[change.name, change.flags, f"{change.kv_cache_tokens:,}", f"{change.max_concurrency:.2f}x"]
            for change in changes]
    return "changes that make vLLM start, cheapest first:\n" + table(
        ["change", "flags", "KV tokens", "concurrency"], rows, align_right_from=2)
