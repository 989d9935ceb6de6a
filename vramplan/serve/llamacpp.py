"""`vramplan serve --engine llama.cpp`: where llama.cpp puts a GGUF model's weights, KV cache and
buffers for a given `-ngl`, context and cache types, the largest `-ngl` and context that fit, and
whether host RAM holds the rest.

Flags keep llama.cpp's own names and defaults (common/common.h, common/arg.cpp at 0c1e570):
`-ngl` defaults to the largest count that fits (what llama.cpp's fit-params pass looks for),
`--ctx-size 0` is the model's training context, `--n-parallel 1`, `--ubatch-size 512`,
`--batch-size 2048`, `--flash-attn auto` (on for CUDA and CPU), f16 K and V. The rules are in
`llamacpp_rules`; this module composes them, solves, advises and formats.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from vramplan.errors import InputError
from vramplan.serve import llamacpp_rules as rules
from vramplan.serve.llamacpp_model import LlamaCppModel, is_gguf_path, load_llamacpp_model

ENGINE = "llama.cpp"
GIB = 2**30
SMALLER_FORMATS = ("gguf-q8_0", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0")  # largest first


def _ngl(text: str) -> int:
    """`-ngl N` or `all` (llama.cpp: a negative count means every layer plus the output layer)."""
    if text.strip().lower() in ("all", "-1"):
        return -1
    if not text.strip().isdigit() or len(text.strip()) > 6:
        raise InputError("n-gpu-layers", f"a layer count 0..999999 or 'all' (got {text[:20]!r})")
    return int(text)


def add_arguments(parser) -> None:
    """llama.cpp's flags, under its own names (llama-server / llama-cli); integers read by the CLI's bounded rule."""
    from vramplan.cli.run_flags import bounded_int

    group = parser.add_argument_group("llama.cpp")
    group.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", dest="n_gpu_layers", default=None,
                       help="layers on the GPU: N or 'all' (default: the largest count that fits)")
    group.add_argument("-c", "--ctx-size", dest="ctx_size", type=bounded_int("--ctx-size", 0, 2**24), default=0,
                       help="context in tokens; 0 = the model's training context (llama.cpp's default)")
    group.add_argument("-ctk", "--cache-type-k", dest="cache_type_k", default="f16", choices=rules.KV_TYPES)
    group.add_argument("-ctv", "--cache-type-v", dest="cache_type_v", default="f16", choices=rules.KV_TYPES)
    group.add_argument("-fa", "--flash-attn", dest="flash_attn", default="auto", choices=("on", "off", "auto"),
                       help="flash attention (auto: on, as CUDA and CPU support it; a quantized V cache needs it)")
    group.add_argument("-np", "--n-parallel", "--parallel", dest="n_parallel", type=bounded_int("--n-parallel", 1, 4096), default=1,
                       help="parallel sequences (slots); each gets ctx-size / n-parallel cells unless --kv-unified")
    group.add_argument("--kv-unified", dest="kv_unified", action="store_true", help="one KV stream shared by all slots")
    group.add_argument("--no-kv-offload", dest="no_kv_offload", action="store_true", help="keep the KV cache in host RAM")
    group.add_argument("--no-mmap", dest="no_mmap", action="store_true",
                       help="read the weights into allocated host memory instead of mapping the file")
    group.add_argument("-ub", "--ubatch-size", dest="ubatch_size", type=bounded_int("--ubatch-size", 1, 2**20), default=512, help="physical batch (compute buffer)")
    group.add_argument("-b", "--batch-size", dest="batch_size", type=bounded_int("--batch-size", 1, 2**20), default=2048, help="logical batch")
    group.add_argument("--swa-full", dest="swa_full", action="store_true", help="full-size cache for sliding-window layers")


@dataclass(frozen=True)
class LlamaCppSettings:
    n_gpu_layers: int | None  # None: solve for the largest that fits; -1: all
    ctx_size: int = 0
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    n_parallel: int = 1
    kv_unified: bool = False
    offload_kqv: bool = True
    use_mmap: bool = True
    ubatch_size: int = 512
    batch_size: int = 2048
    swa_full: bool = False

    def checked(self) -> "LlamaCppSettings":
        for field, value, high in (("ctx-size", self.ctx_size, 2**24), ("n-parallel", self.n_parallel, 256),
                                   ("ubatch-size", self.ubatch_size, 2**20), ("batch-size", self.batch_size, 2**20)):
            low = 0 if field == "ctx-size" else 1
            if not low <= value <= high:
                raise InputError(field, f"{low}..{high} allowed (got {value})")
        if self.cache_type_v not in ("f16", "bf16", "f32") and self.flash_attn == "off":
            raise InputError("cache-type-v", "a quantized V cache requires flash attention (llama-context.cpp); "
                                             "use --flash-attn on or auto")
        return self


def settings_from_args(args) -> LlamaCppSettings:
    ngl = getattr(args, "n_gpu_layers", None)
    return LlamaCppSettings(
        n_gpu_layers=None if ngl is None else ngl if isinstance(ngl, int) else _ngl(str(ngl)),
        ctx_size=getattr(args, "ctx_size", 0), cache_type_k=getattr(args, "cache_type_k", "f16"),
        cache_type_v=getattr(args, "cache_type_v", "f16"), flash_attn=getattr(args, "flash_attn", "auto"),
        n_parallel=getattr(args, "n_parallel", 1), kv_unified=getattr(args, "kv_unified", False),
        offload_kqv=not getattr(args, "no_kv_offload", False), use_mmap=not getattr(args, "no_mmap", False),
        ubatch_size=getattr(args, "ubatch_size", 512), batch_size=getattr(args, "batch_size", 2048),
        swa_full=getattr(args, "swa_full", False)).checked()


@dataclass(frozen=True)
class Placement:
    """Bytes on each side for one -ngl, context and cache setting."""
    n_gpu_layers: int  # as llama.cpp counts them, output layer included
    n_ctx: int  # after llama.cpp's padding
    kv_cells: int
    kv_swa_cells: int
    kv_streams: int
    weights_gpu: int
    weights_host: int
    kv_gpu: int
    kv_host: int
    compute_gpu: int
    compute_host: int
    output_host: int
    cuda_context: int

    @property
    def gpu_bytes(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu + self.cuda_context

    @property
    def host_bytes(self) -> int:
        return self.weights_host + self.kv_host + self.compute_host + self.output_host


def place(model: LlamaCppModel, cuda_context: int, s: LlamaCppSettings, n_gpu_layers: int, ctx_size: int) -> Placement:
    n_ctx = ctx_size or model.n_ctx_train
    ngl = rules.gpu_layer_count(n_gpu_layers, model.n_layer)
    ngl = min(ngl, model.n_layer + 1)
    flash = s.flash_attn != "off"
    kv = rules.kv_cache(model, n_ctx, s.n_parallel, s.kv_unified, s.cache_type_k, s.cache_type_v, ngl,
                        s.offload_kqv, min(s.ubatch_size, s.batch_size), s.swa_full)
    weights = rules.weight_buffers(model, ngl, s.use_mmap)
    ubatch = min(s.ubatch_size, s.batch_size, rules.pad(n_ctx, rules.CTX_PAD))
    compute = rules.compute_buffer_estimate(model, kv["cells"], ubatch, s.n_parallel, flash)
    on_gpu = ngl > 0
    all_on_gpu = ngl >= model.n_layer + 1
    # Fully offloaded, the host keeps only the input embeddings of one ubatch (token_embd stays on the CPU).
    compute_host = model.n_embd * ubatch * 4 if all_on_gpu else compute
    return Placement(
        n_gpu_layers=ngl, n_ctx=kv["cells"] * kv["streams"],
        kv_cells=kv["cells"], kv_swa_cells=kv["swa_cells"], kv_streams=kv["streams"],
        weights_gpu=weights["gpu"], weights_host=weights["host"], kv_gpu=kv["gpu"], kv_host=kv["host"],
        compute_gpu=compute if on_gpu else 0, compute_host=compute_host,
        output_host=rules.output_buffer_bytes(model, s.n_parallel), cuda_context=cuda_context if on_gpu else 0)


def _fits(p: Placement, gpu_bytes: int, host_ram: int | None) -> tuple[bool, bool]:
    return p.gpu_bytes <= gpu_bytes, host_ram is None or p.host_bytes <= host_ram


def max_gpu_layers(model, cuda_context, s, ctx_size, gpu_bytes) -> int:
    """The largest -ngl (0..n_layer+1) whose GPU side fits; GPU bytes never fall as -ngl grows."""
    low, high = 0, model.n_layer + 1
    while low < high:
        mid = (low + high + 1) // 2
        if place(model, cuda_context, s, mid, ctx_size).gpu_bytes <= gpu_bytes:
            low = mid
        else:
            high = mid - 1
    return low


def max_context(model, cuda_context, s, ngl, gpu_bytes, host_ram) -> int:
    """The largest --ctx-size (a multiple of 256 x n-parallel, up to 4 x the training context)
    that fits both sides at this -ngl; 0 when not even 256 cells do."""
    step = rules.CTX_PAD * (1 if s.kv_unified else s.n_parallel)
    low, high = 0, max(model.n_ctx_train * 4 // step, 1)
    while low < high:
        mid = (low + high + 1) // 2
        if all(_fits(place(model, cuda_context, s, ngl, mid * step), gpu_bytes, host_ram)):
            low = mid
        else:
            high = mid - 1
    return low * step


@dataclass(frozen=True)
class LlamaCppPlan:
    engine: str
    model: str
    model_source: str
    gpu: str
    gpu_total_bytes: int
    host_ram_bytes: int | None
    settings: LlamaCppSettings
    placement: Placement
    n_layer: int
    max_gpu_layers: int
    max_ctx_size: int
    fits_gpu: bool
    fits_host: bool
    advice: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host

    def to_json(self) -> dict:
        p = self.placement
        return {
            "engine": self.engine, "model": self.model, "model_source": self.model_source, "gpu": self.gpu,
            "gpu_total_bytes": self.gpu_total_bytes, "host_ram_bytes": self.host_ram_bytes,
            "settings": asdict(self.settings), "n_layer": self.n_layer,
            "placement": {**asdict(p), "gpu_bytes": p.gpu_bytes, "host_bytes": p.host_bytes},
            "max_gpu_layers": self.max_gpu_layers, "max_ctx_size": self.max_ctx_size,
            "fits_gpu": self.fits_gpu, "fits_host": self.fits_host, "fits": self.fits,
            "advice": list(self.advice), "notes": list(self.notes),
        }

    def render_text(self) -> str:
        p, s = self.placement, self.settings
        gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
        repeating = max(p.n_gpu_layers - 1, 0) if p.n_gpu_layers else 0
        lines = [
            f"llama.cpp plan: {self.model} on {self.gpu}" + (f" + {self.host_ram_bytes / GIB:.0f} GiB host RAM" if self.host_ram_bytes else ""),
            f"  -ngl {p.n_gpu_layers} of {self.n_layer + 1} (output layer {'on GPU' if p.n_gpu_layers else 'on CPU'}, "
            f"{repeating} of {self.n_layer} repeating layers on GPU); largest that fits: {self.max_gpu_layers}",
            f"  context {p.n_ctx} tokens ({p.kv_streams} x {p.kv_cells} cells"
            + (f", sliding-window layers {p.kv_swa_cells}" if p.kv_swa_cells else "")
            + f"), K {s.cache_type_k}, V {s.cache_type_v}; largest --ctx-size that fits: {self.max_ctx_size}",
            f"  {'':22}{'GPU':>12}  {'host':>12}",
            f"  {'weights':22}{gib(p.weights_gpu):>12}  {gib(p.weights_host):>12}"
            + ("  (mmap: file pages)" if s.use_mmap else "  (--no-mmap: allocated)"),
            f"  {'KV cache':22}{gib(p.kv_gpu):>12}  {gib(p.kv_host):>12}",
            f"  {'compute (estimate)':22}{gib(p.compute_gpu):>12}  {gib(p.compute_host):>12}",
            f"  {'output (logits)':22}{'':>12}  {gib(p.output_host):>12}",
            f"  {'CUDA context':22}{gib(p.cuda_context):>12}",
            f"  {'total':22}{gib(p.gpu_bytes):>12}  {gib(p.host_bytes):>12}",
            f"  GPU {self.gpu_total_bytes / GIB:.2f} GiB: {'fits' if self.fits_gpu else 'does NOT fit'}; host: "
            + ("not checked (give --host-ram)" if self.host_ram_bytes is None else ("fits" if self.fits_host else "does NOT fit")),
        ]
        lines += [f"  advice: {a}" for a in self.advice]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _advice(model, cuda_context, s, ngl, ctx, gpu_bytes, host_ram, fmt, spec) -> tuple[str, ...]:
    """What would make it fit, cheapest first: quantized KV cache, shorter context, fewer slots,
    a different offload, a smaller quant type. Each line is checked by planning it."""
    def fits(settings, layers=ngl, context=ctx):
        return all(_fits(place(model, cuda_context, settings, layers, context), gpu_bytes, host_ram))

    out = []
    if s.cache_type_k == "f16" or s.cache_type_v == "f16":
        for kv in ("q8_0", "q4_0"):
            quantized = LlamaCppSettings(**{**asdict(s), "cache_type_k": kv, "cache_type_v": kv,
                                            "flash_attn": "on" if s.flash_attn == "off" else s.flash_attn})
            if fits(quantized):
                out.append(f"--cache-type-k {kv} --cache-type-v {kv} fits (KV cache at {kv})")
                break
    longest = max_context(model, cuda_context, s, ngl, gpu_bytes, host_ram)
    if longest:
        out.append(f"--ctx-size {longest} fits (the longest context at -ngl {ngl})")
    if s.n_parallel > 1:
        fewer = LlamaCppSettings(**{**asdict(s), "n_parallel": 1})
        if fits(fewer):
            out.append("--n-parallel 1 fits")
    layers = max_gpu_layers(model, cuda_context, s, ctx, gpu_bytes)
    if layers != ngl and fits(s, layers):
        out.append(f"-ngl {layers} fits (more of the model {'on the GPU' if layers > ngl else 'in host RAM'})")
    if spec is not None and fmt in SMALLER_FORMATS:
        for smaller in SMALLER_FORMATS[SMALLER_FORMATS.index(fmt) + 1:]:
            other = load_llamacpp_model(spec, smaller)
            if all(_fits(place(other, cuda_context, s, ngl, ctx), gpu_bytes, host_ram)):
                out.append(f"--format {smaller} fits at -ngl {ngl}")
                break
    return tuple(out)


def plan(model, gpu, settings: LlamaCppSettings, host_ram: int | None = None, fmt: str | None = None) -> LlamaCppPlan:
    """The llama.cpp plan for `model` (ModelSpec + fmt, or a .gguf path) on `gpu` (a GPUSpec)."""
    spec = None if isinstance(model, (str, LlamaCppModel)) or hasattr(model, "__fspath__") else model
    llm = load_llamacpp_model(model, fmt)
    gpu_bytes, cuda_context = gpu.total_memory_bytes, gpu.cuda_context_bytes
    ctx = settings.ctx_size or llm.n_ctx_train
    best = max_gpu_layers(llm, cuda_context, settings, ctx, gpu_bytes)
    ngl = best if settings.n_gpu_layers is None else min(rules.gpu_layer_count(settings.n_gpu_layers, llm.n_layer), llm.n_layer + 1)
    placement = place(llm, cuda_context, settings, ngl, ctx)
    fits_gpu, fits_host = _fits(placement, gpu_bytes, host_ram)
    advice = () if fits_gpu and fits_host else _advice(llm, cuda_context, settings, ngl, ctx, gpu_bytes, host_ram, fmt, spec)
    notes = [f"model: {llm.source}",
             "compute buffers are an estimate (validation/llamacpp/agreement.json says how close); weights and KV follow llama.cpp's allocation rules"]
    if settings.use_mmap and placement.weights_host:
        notes.append("with mmap the host-side weights are file pages the OS may evict and re-read; --no-mmap pins them")
    if ctx > llm.n_ctx_train:
        notes.append(f"context {ctx} is past the training context {llm.n_ctx_train}")
    return LlamaCppPlan(
        engine=ENGINE, model=llm.name, model_source=llm.source, gpu=getattr(gpu, "name", str(gpu)),
        gpu_total_bytes=gpu_bytes, host_ram_bytes=host_ram, settings=settings, placement=placement,
        n_layer=llm.n_layer, max_gpu_layers=best,
        max_ctx_size=max_context(llm, cuda_context, settings, ngl, gpu_bytes, host_ram),
        fits_gpu=fits_gpu, fits_host=fits_host, advice=advice, notes=tuple(notes))


def plan_from_args(model, gpu, args) -> LlamaCppPlan:
    """The engine contract: `model` a ModelSpec or a .gguf path, `gpu` a GPUSpec, `args` the parsed
    flags (add_arguments) plus `host_ram_bytes` (bytes or None, read by `vramplan serve` from --host-ram)
    and `format` (gguf-q4_k_m, ...)."""
    return plan(model, gpu, settings_from_args(args), getattr(args, "host_ram_bytes", None), getattr(args, "format", None))


__all__ = ["ENGINE", "add_arguments", "is_gguf_path", "plan_from_args", "plan", "LlamaCppPlan", "LlamaCppSettings", "Placement",
           "max_gpu_layers", "max_context"]
