"""llama.cpp's memory rules as pure functions: which layers `-ngl` puts on the GPU, the weight buffers
on each side, the KV cache, the output buffer, and an estimate of the compute buffer.

Sources are llama.cpp files at commit 0c1e570 (the copy llama-cpp-python 0.3.36 vendors).
"""
from __future__ import annotations

from vramplan.serve.llamacpp_model import INPUT, OUTPUT, LlamaCppModel
from vramplan.serve.llamacpp_types import UNQUANTIZED, row_bytes

CPU_ALIGNMENT = 32  # TENSOR_ALIGNMENT (ggml-impl.h): ggml_backend_cpu_buffer_type_get_alignment
CUDA_ALIGNMENT = 128  # ggml_backend_cuda_buffer_type_get_alignment (ggml-cuda.cu)
CUDA_MATRIX_ROW_PADDING = 512  # MATRIX_ROW_PADDING (ggml-cuda/common.cuh)
CTX_PAD = 256  # cparams.n_ctx = GGML_PAD(n_ctx, 256) (llama-context.cpp)
KV_TYPES = ("f16", "bf16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")  # common/arg.cpp kv_cache_types


def pad(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def gpu_layer_count(n_gpu_layers: int, n_layer: int) -> int:
    """llama_model::n_gpu_layers (llama-model.cpp): a negative value (`-ngl all`, the default -1)
    means n_layer + 1, the +1 being the output layer."""
    return n_gpu_layers if n_gpu_layers >= 0 else n_layer + 1


def layer_on_gpu(layer: int, n_layer: int, n_gpu_layers: int) -> bool:
    """llama_model_base::load_tensors (llama-model.cpp): i_gpu_start = max(n_layer + 1 - ngl, 0);
    layer il (0..n_layer-1, or n_layer for the output layer) is on the GPU iff il >= i_gpu_start.
    So -ngl 1 offloads only the output layer, -ngl k the output layer and the last k-1 repeating
    layers; the input layer (token_embd) always stays on the CPU ("very little benefit")."""
    if layer == INPUT:
        return False
    ngl = gpu_layer_count(n_gpu_layers, n_layer)
    index = n_layer if layer == OUTPUT else layer
    return index >= max(n_layer + 1 - ngl, 0) and index - max(n_layer + 1 - ngl, 0) < min(ngl, n_layer + 1)


def cuda_alloc_bytes(ggml_type: str, shape: tuple[int, ...], nbytes: int) -> int:
    """ggml_backend_cuda_buffer_type_get_alloc_size: a quantized tensor whose rows are not a multiple
    of 512 elements gets row_size(512 - ne0 % 512) extra bytes; then padded to 128 (ggml-alloc.c
    ggml_backend_alloc_ctx_tensors_from_buft pads each tensor to the buffer type's alignment)."""
    if ggml_type not in UNQUANTIZED and shape[0] % CUDA_MATRIX_ROW_PADDING:
        nbytes += row_bytes(ggml_type, CUDA_MATRIX_ROW_PADDING - shape[0] % CUDA_MATRIX_ROW_PADDING)
    return pad(nbytes, CUDA_ALIGNMENT)


def weight_buffers(model: LlamaCppModel, n_gpu_layers: int, use_mmap: bool) -> dict[str, int]:
    """Model buffer bytes by side, as llama.cpp logs "<buft> model buffer size":
    gpu: sum of cuda_alloc_bytes of the GPU tensors (plus a copy of token_embd as the output matrix
    when the model ties them and the output layer is offloaded: TENSOR_DUPLICATED, llama-model-loader.cpp);
    host with mmap: the file span from the first to the end of the last CPU tensor
    (llama_model_loader::get_mapping_range), without mmap: the CPU tensors each padded to 32 B."""
    gpu = 0
    cpu_tensors = []
    for layer, tensors in model.tensors_by_layer.items():
        if layer_on_gpu(layer, model.n_layer, n_gpu_layers):
            gpu += sum(cuda_alloc_bytes(t.ggml_type, t.shape, t.nbytes) for t in tensors)
        else:
            cpu_tensors.extend(tensors)
    if model.tied_output and layer_on_gpu(OUTPUT, model.n_layer, n_gpu_layers):
        embd = model.token_embd
        gpu += cuda_alloc_bytes(embd.ggml_type, embd.shape, embd.nbytes)
    if not cpu_tensors:
        host = 0
    elif use_mmap:
        host = max(t.offset + t.nbytes for t in cpu_tensors) - min(t.offset for t in cpu_tensors)
    else:
        host = sum(pad(t.nbytes, CPU_ALIGNMENT) for t in cpu_tensors)
    return {"gpu": gpu, "host": host}


def kv_cells(n_ctx: int, n_parallel: int, kv_unified: bool) -> tuple[int, int]:
    """(cells per stream, streams) (llama-context.cpp): n_ctx = pad(n_ctx, 256); unified: one stream of
    n_ctx cells; otherwise n_parallel streams of pad(n_ctx / n_parallel, 256) cells."""
    n_ctx = pad(n_ctx, CTX_PAD)
    if kv_unified:
        return n_ctx, 1
    return pad(n_ctx // n_parallel, CTX_PAD), n_parallel


def swa_cells(model: LlamaCppModel, cells: int, n_parallel: int, kv_unified: bool, n_ubatch: int, swa_full: bool) -> int:
    """llama_kv_cache_iswa (llama-kv-cache-iswa.cpp): size_swa = pad(min(size_base,
    n_swa x (unified ? n_seq_max : 1) + n_ubatch), 256); --swa-full keeps size_base."""
    if swa_full:
        return cells
    return pad(min(cells, model.n_swa * (n_parallel if kv_unified else 1) + n_ubatch), CTX_PAD)


def kv_layer_bytes(model: LlamaCppModel, layer: int, cells: int, streams: int, type_k: str, type_v: str) -> tuple[int, int]:
    """(K bytes, V bytes) of one layer: ggml_new_tensor_3d(type, n_embd_{k,v}_gqa, kv_size, n_stream)
    (llama_kv_cache::llama_kv_cache, llama-kv-cache.cpp) = row_size(type, width) x cells x streams."""
    width_k, width_v = model.kv_width(layer)
    return row_bytes(type_k, width_k) * cells * streams, row_bytes(type_v, width_v) * cells * streams


def kv_cache(model: LlamaCppModel, n_ctx: int, n_parallel: int, kv_unified: bool, type_k: str, type_v: str,
             n_gpu_layers: int, offload_kqv: bool, n_ubatch: int, swa_full: bool = False) -> dict:
    """KV cache by side: a layer's K and V live on its layer's device when offload_kqv (the default;
    --no-kv-offload keeps all on the CPU). Each side's buffer sums its tensors padded to that buffer
    type's alignment. Returns cells, swa cells and bytes per side."""
    cells, streams = kv_cells(n_ctx, n_parallel, kv_unified)
    local_cells = swa_cells(model, cells, n_parallel, kv_unified, n_ubatch, swa_full) if model.n_swa else cells
    sides = {"gpu": 0, "host": 0}
    k_total = v_total = 0
    for il in range(model.n_layer):
        layer_cells = local_cells if model.swa_layers[il] else cells
        k, v = kv_layer_bytes(model, il, layer_cells, streams, type_k, type_v)
        on_gpu = offload_kqv and layer_on_gpu(il, model.n_layer, n_gpu_layers)
        align = CUDA_ALIGNMENT if on_gpu else CPU_ALIGNMENT
        sides["gpu" if on_gpu else "host"] += pad(k, align) + pad(v, align)
        k_total, v_total = k_total + k, v_total + v
    return {"cells": cells, "swa_cells": local_cells if model.n_swa else 0, "streams": streams,
            "k_bytes": k_total, "v_bytes": v_total, **sides}


def output_buffer_bytes(model: LlamaCppModel, n_parallel: int) -> int:
    """llama_context::output_reserve(n_seq_max) (llama-context.cpp): logits n_vocab x max(n_outputs,
    n_seq_max) float32, in host memory (the output device's pinned host buffer when it has one)."""
    return model.n_vocab * n_parallel * 4


def compute_buffer_estimate(model: LlamaCppModel, cells: int, n_ubatch: int, n_parallel: int, flash_attn: bool) -> int:
    """An estimate of the largest compute buffer (the worst-case prompt graph reserved by
    llama_context::sched_reserve, llama-context.cpp; ggml-alloc reuses memory between nodes, which
    this does not replay). Terms, float32: the attention scores of one layer, n_kv x n_tokens x n_head
    (twice: scores and softmax; with flash attention neither exists and the KQV output n_embd x
    n_tokens stands in), or the logits of n_tokens outputs, n_vocab x n_tokens, whichever is larger,
    plus the residual stream and one FFN activation (n_embd + 2 x n_ff) x n_tokens.
    Its agreement with llama.cpp is measured, not exact: validation/llamacpp/agreement.json."""
    n_tokens = min(cells, n_ubatch)
    n_head = max(model.n_head)
    attention = model.n_embd * n_tokens * 4 if flash_attn else 2 * cells * n_tokens * n_head * 4
    logits = model.n_vocab * n_tokens * 4
    return max(attention, logits) + (model.n_embd + 2 * model.n_ff) * n_tokens * 4
