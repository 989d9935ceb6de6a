"""The vLLM engine: a `vllm serve` start-up plan - weights, activation peak, KV pool, blocks, tokens,
concurrency, the start-up error - with vLLM's own flag names. Rules: `vllm_rules.py` (vLLM source,
version there); estimates of measured terms: `vllm_estimates.py`.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from vramplan.errors import InputError
from vramplan.serve import vllm_estimates as estimates
from vramplan.serve import vllm_rules as rules

ENGINE = "vllm"
QUANTIZATIONS = ("awq", "gptq", "fp8", "bitsandbytes")
KV_CACHE_DTYPES = ("auto", "fp8")
# --quantization -> the weight formats it can load, the first the default (vLLM reads the checkpoint's
# quantization_config; fp8 also quantizes a 16-bit checkpoint at load, vllm/model_executor/layers/quantization)
QUANTIZATION_FORMATS = {
    "awq": ("awq-4bit",),
    "gptq": ("gptq-4bit", "gptq-8bit"),
    "fp8": ("bf16", "fp16"),
    "bitsandbytes": ("nf4", "fp4", "int8"),
}
TYPICAL_LEN = 8192
WEIGHT_FORMATS = ("bf16", "fp16", "fp32", "awq-4bit", "gptq-4bit", "gptq-8bit", "nf4", "fp4", "int8")


@dataclass(frozen=True)
class VllmSettings:
    """The `vllm serve` flags that change memory; None: vLLM's default for this model and GPU."""

    gpu_memory_utilization: float = rules.DEFAULT_GPU_MEMORY_UTILIZATION
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    block_size: int = rules.DEFAULT_BLOCK_SIZE
    tensor_parallel_size: int = 1
    quantization: str | None = None
    enforce_eager: bool = False
    weight_format: str | None = None
    typical_len: int = TYPICAL_LEN


@dataclass(frozen=True)
class VllmPlan:
    """One GPU of a `vllm serve` start-up. Bytes are per GPU (one tensor-parallel rank)."""

    model: str
    gpu: str
    vllm_version: str
    weight_format: str
    quantization: str | None
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_dtype: str
    block_size: int
    tensor_parallel_size: int
    enforce_eager: bool
    total_memory_bytes: int
    requested_bytes: int
    cuda_context_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    available_kv_bytes: int
    kv_heads_per_gpu: int
    head_dim: int
    full_layers: int
    sliding_layers: int
    sliding_window: int
    kv_groups: int
    page_bytes: int
    block_bytes: int
    num_blocks: int
    kv_cache_tokens: int
    max_concurrency: float
    typical_len: int
    concurrency_at_typical: float
    needed_kv_bytes: int
    largest_max_model_len: int
    startup_error: str | None
    warnings: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        """vLLM starts: no start-up error (free memory, a pool that holds one max_model_len request)."""
        return self.startup_error is None

    def to_json(self) -> dict:
        data = asdict(self)
        data["engine"] = ENGINE
        data["fits"] = self.fits
        data["warnings"] = list(self.warnings)
        return data

    def render_text(self) -> str:
        from vramplan.serve.vllm_text import render_plan

        return render_plan(self)


def resolve_weight_format(model, settings: VllmSettings) -> tuple[str, str | None]:
    """(weight format, vLLM quantization) from --format and --quantization; they must agree."""
    fmt, quantization = settings.weight_format, settings.quantization
    if fmt is not None and fmt.startswith("gguf-"):
        raise InputError("--format", f"{fmt} is a llama.cpp format: use --engine llama.cpp, or for vLLM one of "
                         "awq-4bit, gptq-4bit, gptq-8bit, nf4, fp4, int8, bf16, fp16")
    if fmt is not None and fmt not in WEIGHT_FORMATS:
        raise InputError("--format", f"one of {', '.join(WEIGHT_FORMATS)} for vLLM (got {fmt})")
    if quantization is None:
        implied = {f: q for q, formats in QUANTIZATION_FORMATS.items() for f in formats if q != "fp8"}
        fmt = fmt or model.stored_weight_format or "bf16"
        if fmt == "fp32":
            fmt = "bf16"  # vLLM's dtype "auto" serves fp32 checkpoints in bf16 (vllm/config/model.py)
        return fmt, implied.get(fmt)
    allowed = QUANTIZATION_FORMATS[quantization]
    if fmt is None:
        fmt = allowed[0] if quantization != "fp8" else "bf16"
    if fmt not in allowed:
        raise InputError("--format", f"--quantization {quantization} loads {', '.join(allowed)} weights (got {fmt})")
    return fmt, quantization


def weight_bytes(model, gpu, fmt: str, quantization: str | None) -> int:
    """Weights of the whole model in `fmt`, from vramplan's weight terms: codes + quantization state + the
    float tensors. fp8 (vLLM Fp8LinearMethod): 1 B per linear weight plus per-tensor fp32 scales (bytes,
    ignored), counted as int8 codes without their per-row scales."""
    from vramplan.estimate import plan
    from vramplan.specs.run import RunConfig

    load_format = "int8" if quantization == "fp8" else fmt
    if load_format == "bf16" and not gpu.bf16:
        load_format = "fp16"  # vLLM's dtype "auto" casts bf16 to fp16 where the GPU has no bf16 (same bytes)
    parts = plan(model, gpu, RunConfig(method="inference", weight_format=load_format, seq_len=1,
                                       max_new_tokens=0)).components()
    state = 0 if quantization == "fp8" else parts["quant_state"]
    return parts["quantized_weights"] + state + parts["float_weights"]


def kv_layout(model, settings: VllmSettings) -> rules.KVLayout:
    """vLLM's attention layers: sliding-window only where the config's layer_types says so (Gemma-2/3;
    vllm/model_executor/models/llama.py, gemma2.py, gemma3.py). Mistral-7B-v0.1's sliding_window without
    layer_types gives full attention in vLLM's llama.py."""
    heads = rules.kv_heads_per_gpu(model.num_key_value_heads, settings.tensor_parallel_size)
    dtype_bytes = 1 if settings.kv_cache_dtype == "fp8" else 2
    page = rules.page_size_bytes(settings.block_size, heads, model.head_dim, dtype_bytes)
    sliding = model.sliding_window_layers if model.sliding_window_pattern else 0
    return rules.KVLayout(model.num_hidden_layers - sliding, sliding, model.sliding_window if sliding else 0, page)


def check_settings(model, gpu, settings: VllmSettings) -> None:
    """Refuse what vLLM refuses before it touches the GPU, as one-line InputErrors."""
    if not 0 < settings.gpu_memory_utilization <= 1:
        raise InputError("--gpu-memory-utilization", f"must be in (0, 1] (got {settings.gpu_memory_utilization})")
    for flag, value in (("--max-model-len", settings.max_model_len), ("--max-num-seqs", settings.max_num_seqs),
                        ("--max-num-batched-tokens", settings.max_num_batched_tokens),
                        ("--tensor-parallel-size", settings.tensor_parallel_size), ("--typical-len", settings.typical_len)):
        if value is not None and value < 1:
            raise InputError(flag, f"must be a positive integer (got {value})")
    if settings.block_size not in (1, 8, 16, 32, 64, 128, 256):
        raise InputError("--block-size", f"vLLM allows 1, 8, 16, 32, 64, 128 or 256 (got {settings.block_size})")
    if settings.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise InputError("--kv-cache-dtype", f"one of {', '.join(KV_CACHE_DTYPES)} (got {settings.kv_cache_dtype})")
    if settings.quantization is not None and settings.quantization not in QUANTIZATIONS:
        raise InputError("--quantization", f"one of {', '.join(QUANTIZATIONS)} (got {settings.quantization})")
    tp = settings.tensor_parallel_size
    if model.num_attention_heads % tp:
        raise InputError("--tensor-parallel-size", f"total number of attention heads ({model.num_attention_heads}) "
                         f"must be divisible by tensor parallel size ({tp}) (vllm/config/model.py)")
    if settings.max_model_len is not None and settings.max_model_len > model.max_position_embeddings:
        raise InputError("--max-model-len", f"{settings.max_model_len} is greater than the derived max_model_len "
                         f"(max_position_embeddings={model.max_position_embeddings}) of {model.name}")


def plan_vllm(model, gpu, settings: VllmSettings) -> VllmPlan:
    """The start-up of `vllm serve` on one GPU of `gpu` kind (x tensor_parallel_size)."""
    check_settings(model, gpu, settings)
    fmt, quantization = resolve_weight_format(model, settings)
    tp = settings.tensor_parallel_size
    default_tokens, default_seqs = rules.default_batch_limits(gpu.total_memory_bytes, gpu.name)
    max_num_seqs = settings.max_num_seqs or default_seqs
    batched = settings.max_num_batched_tokens or default_tokens
    max_model_len = settings.max_model_len or model.max_position_embeddings
    total = gpu.total_memory_bytes
    requested = rules.requested_memory_bytes(total, settings.gpu_memory_utilization)
    weights = rules.cdiv(weight_bytes(model, gpu, fmt, quantization), tp)
    activation = estimates.activation_peak_bytes(model, batched, max_num_seqs, tp)
    non_torch = estimates.non_torch_bytes(tp)
    graphs = estimates.cuda_graph_bytes(model, max_num_seqs, tp, settings.enforce_eager)
    available = rules.available_kv_cache_bytes(requested, weights, activation, non_torch)
    layout = kv_layout(model, settings)
    block_size = settings.block_size
    blocks = rules.num_gpu_blocks(available, layout)
    needed = rules.needed_kv_bytes(layout, max_model_len, block_size, batched)
    largest = rules.estimate_max_model_len(layout, available, model.max_position_embeddings, block_size, batched)
    typical = min(settings.typical_len, max_model_len)
    free_at_start = total - gpu.cuda_context_bytes
    error = None
    if requested > free_at_start:
        error = rules.startup_free_memory_error(free_at_start, total, settings.gpu_memory_utilization)
    elif available <= 0 or needed > available:
        estimated = rules.estimate_max_model_len(layout, available, max_model_len, block_size, batched)
        error = rules.not_enough_kv_cache_error(max_model_len, needed, available, estimated)
    warnings = []
    if error is None and requested + graphs + gpu.cuda_context_bytes > total:
        warnings.append("the KV pool, CUDA graphs and the CUDA context together exceed the GPU: vLLM starts "
                        "the pool, then may run out of memory capturing CUDA graphs (try --enforce-eager or a "
                        "lower --gpu-memory-utilization)")
    if settings.kv_cache_dtype == "fp8" and not gpu.fp8:
        warnings.append(f"{gpu.key} has no native fp8: vLLM stores an fp8 KV cache there only with some "
                        "attention backends")
    return VllmPlan(
        model=model.name, gpu=gpu.key, vllm_version=rules.VLLM_VERSION, weight_format=fmt, quantization=quantization,
        gpu_memory_utilization=settings.gpu_memory_utilization, max_model_len=max_model_len,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=batched, kv_cache_dtype=settings.kv_cache_dtype,
        block_size=block_size, tensor_parallel_size=tp, enforce_eager=settings.enforce_eager,
        total_memory_bytes=total, requested_bytes=requested, cuda_context_bytes=gpu.cuda_context_bytes,
        weights_bytes=weights, activation_peak_bytes=activation, non_torch_bytes=non_torch, cuda_graph_bytes=graphs,
        available_kv_bytes=available,
        kv_heads_per_gpu=rules.kv_heads_per_gpu(model.num_key_value_heads, tp), head_dim=model.head_dim,
        full_layers=layout.full_layers, sliding_layers=layout.sliding_layers, sliding_window=layout.sliding_window,
        kv_groups=layout.num_groups, page_bytes=layout.page_bytes, block_bytes=layout.block_bytes,
        num_blocks=blocks, kv_cache_tokens=rules.kv_cache_tokens(blocks, layout, block_size),
        max_concurrency=rules.max_concurrency(blocks, layout, max_model_len, block_size, batched),
        typical_len=typical, concurrency_at_typical=rules.max_concurrency(blocks, layout, typical, block_size, batched),
        needed_kv_bytes=needed, largest_max_model_len=largest, startup_error=error, warnings=tuple(warnings),
    )


TOKENS_LIMIT = 1 << 24  # as RUN_BOUNDS["seq_len"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """vLLM's own flags, with vLLM's names and defaults; numbers read with vramplan's ASCII-digit rule."""
    from vramplan.cli.run_flags import _typed, bounded_int
    from vramplan.text import parse_float

    group = parser.add_argument_group("vLLM engine (--engine vllm), as `vllm serve` names them")
    group.add_argument("--gpu-memory-utilization", type=_typed(parse_float, "--gpu-memory-utilization"), default=None, metavar="FRACTION",
                       help="share of the GPU vLLM may use (default 0.9)")
    group.add_argument("--max-model-len", type=bounded_int("--max-model-len", 1, TOKENS_LIMIT), default=None, metavar="TOKENS",
                       help="longest request, prompt + output (default: the model's max_position_embeddings)")
    group.add_argument("--max-num-seqs", type=bounded_int("--max-num-seqs", 1, 1 << 20), default=None, metavar="N",
                       help="sequences per step (default 256; 1024 on >= 70 GiB GPUs other than A100)")
    group.add_argument("--max-num-batched-tokens", type=bounded_int("--max-num-batched-tokens", 1, TOKENS_LIMIT), default=None, metavar="TOKENS",
                       help="tokens per step, the profiled batch (default 2048; 8192 on >= 70 GiB GPUs other than A100)")
    group.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default=None,
                       help="KV cache dtype: auto (the model dtype) or fp8 (default auto)")
    group.add_argument("--block-size", type=bounded_int("--block-size", 1, 256), default=None, metavar="TOKENS", help="tokens per KV block (default 16)")
    group.add_argument("--tensor-parallel-size", "-tp", type=bounded_int("--tensor-parallel-size", 1, 1024), default=None, metavar="N",
                       help="GPUs that shard the model (default 1); bytes are per GPU")
    group.add_argument("--quantization", "-q", choices=QUANTIZATIONS, default=None,
                       help="quantized weights: awq, gptq, fp8 or bitsandbytes (default: from --format)")
    group.add_argument("--enforce-eager", action="store_true", default=None,
                       help="no CUDA graphs (their memory is not needed)")
    group.add_argument("--typical-len", type=bounded_int("--typical-len", 1, TOKENS_LIMIT), default=None, metavar="TOKENS",
                       help="vramplan: a typical request length for a second concurrency figure (default 8192)")


def settings_from_args(args) -> VllmSettings:
    given = {
        "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": args.max_num_batched_tokens,
        "kv_cache_dtype": args.kv_cache_dtype, "block_size": args.block_size,
        "tensor_parallel_size": args.tensor_parallel_size, "quantization": args.quantization,
        "enforce_eager": args.enforce_eager, "weight_format": getattr(args, "format", None),
        "typical_len": args.typical_len,
    }
    return VllmSettings(**{name: value for name, value in given.items() if value is not None})


def plan_from_args(model, gpu, args) -> VllmPlan:
    return plan_vllm(model, gpu, settings_from_args(args))
