"""Frozen base weights, per storage format.

Which modules are quantized follows transformers' bitsandbytes/GPTQ/AWQ integrations:
only the `nn.Linear` layers inside the decoder; embeddings, lm_head, norms and biases
stay in a float dtype (`dtypes.RunDtypes.float_weights`), and so do transformers 5's fused
MoE experts under bitsandbytes (`replace_with_bnb_linear` swaps `type(module) is nn.Linear`
only; quantizer_bnb_4bit.py `param_needs_quantization` asks for a `Linear4bit`). GGUF (llama.cpp) also
quantizes the token embedding and output matrix.
"""
from __future__ import annotations

from functools import lru_cache

from vramplan.memory import parameters
from vramplan.memory.terms import ALLOCATION, term, total
from vramplan.memory.xp import ceil_div

NF4_CODE_ENTRIES = 16  # fp32 entries of the 4-bit code table (quant_map)
DYNAMIC_MAP_ENTRIES = 256  # fp32 entries of the signed dynamic 8-bit map (nested_quant_map)
NESTED_BLOCKSIZE = 256  # bitsandbytes always double-quantizes absmax in blocks of 256


def nf4_state_tensor_bytes(numel: int, blocksize: int = 64, double_quant: bool = True) -> dict[str, int]:
    """Exact bytes of each tensor bitsandbytes' `quantize_4bit` keeps for one weight (NF4 or FP4).

    packed = ceil(n/2) uint8 (two codes per byte); absmax = ceil(n/blocksize) fp32, or with
    double quantization uint8 + nested_absmax = ceil(blocks/256) fp32 + a 0-dim fp32 offset
    + the 256-entry fp32 dynamic map; quant_map = 16 fp32. Source: bitsandbytes/functional.py
    (quantize_4bit, quantize_blockwise), QLoRA paper §3 (0.127 bits/param of constants).
    """
    blocks = ceil_div(numel, blocksize)
    sizes = {"packed": ceil_div(numel, 2), "quant_map": NF4_CODE_ENTRIES * 4}
    if double_quant:
        sizes["absmax"] = blocks
        sizes["nested_absmax"] = ceil_div(blocks, NESTED_BLOCKSIZE) * 4
        sizes["nested_quant_map"] = DYNAMIC_MAP_ENTRIES * 4
        sizes["offset"] = 4
    else:
        sizes["absmax"] = blocks * 4
    return sizes


def int8_tensor_bytes(rows: int, cols: int) -> dict[str, int]:
    """LLM.int8 (bitsandbytes Int8Params): int8 weight + one fp32 scale per output row (SCB)."""
    return {"packed": rows * cols, "SCB": rows * 4}


def gptq_tensor_bytes(rows: int, cols: int, bits: int, group_size: int) -> dict[str, int]:
    """GPTQ (auto-gptq / gptqmodel layout) for a weight of `rows` outputs x `cols` inputs.

    qweight int32 [cols*bits/32, rows]; qzeros int32 [groups, rows*bits/32];
    scales fp16 [groups, rows]; g_idx int32 [cols]; groups = ceil(cols/group_size).
    """
    groups = ceil_div(cols, group_size)
    return {
        "packed": ceil_div(cols * bits, 32) * rows * 4,
        "qzeros": groups * ceil_div(rows * bits, 32) * 4,
        "scales": groups * rows * 2,
        "g_idx": cols * 4,
    }


def awq_tensor_bytes(rows: int, cols: int, group_size: int) -> dict[str, int]:
    """AWQ GEMM layout: qweight int32 [cols, rows/8]; qzeros int32 [groups, rows/8]; scales fp16 [groups, rows]."""
    groups = ceil_div(cols, group_size)
    return {
        "packed": cols * ceil_div(rows, 8) * 4,
        "qzeros": groups * ceil_div(rows, 8) * 4,
        "scales": groups * rows * 2,
    }


# GGUF block types: (elements per block, bytes per block), from ggml's type traits (ggml.c).
GGUF_BLOCKS = {
    "q4_0": (32, 18),
    "q8_0": (32, 34),
    "q4_k": (256, 144),
    "q5_k": (256, 176),
    "q6_k": (256, 210),
}


def gguf_use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's rule for which layers get Q6_K in the _M mixes (llama-quant.cpp)."""
    eighth = layers // 8
    return layer < eighth or layer >= 7 * layers // 8 or (layer - eighth) % 3 == 2


def gguf_tensor_type(fmt: str, role: str, layer: int = 0, layers: int = 1) -> str:
    """Block type llama.cpp picks for one tensor (`role`: attn_v, ffn_down, token_embd, output, other)."""
    base = {"gguf-q4_0": "q4_0", "gguf-q8_0": "q8_0", "gguf-q6_k": "q6_k",
            "gguf-q4_k_m": "q4_k", "gguf-q5_k_m": "q5_k"}[fmt]
    if role == "output" and base not in ("q8_0",):
        return "q6_k"
    if fmt in ("gguf-q4_k_m", "gguf-q5_k_m") and role in ("attn_v", "ffn_down"):
        return "q6_k" if gguf_use_more_bits(layer, layers) else base
    return base


def gguf_tensor_bytes(numel: int, block_type: str) -> int:
    elements, nbytes = GGUF_BLOCKS[block_type]
    return ceil_div(numel, elements) * nbytes


_GGUF_ROLES = {"v_proj": "attn_v", "down_proj": "ffn_down", "w2": "ffn_down"}


def quantized_linear_tensors(model, fmt: str, blocksize: int, double_quant: bool, group_size: int,
                             moe_experts: str = "linear"):
    """Yield (weight name, tensor sizes dict, how many such weights) for every decoder linear in `fmt`.

    With fused MoE experts (`moe_experts="fused"`) the experts and router are not nn.Linear, so they
    are not here: they stay float (`parameters.fused_expert_groups`)."""
    layers = model.num_hidden_layers
    for group in parameters.linear_weight_groups(model, moe_experts):
        rows, cols = group.rows, group.cols
        if fmt in ("nf4", "fp4"):
            yield group.name, nf4_state_tensor_bytes(rows * cols, blocksize, double_quant), group.count
        elif fmt == "int8":
            yield group.name, int8_tensor_bytes(rows, cols), group.count
        elif fmt.startswith("gptq-"):
            yield group.name, gptq_tensor_bytes(rows, cols, int(fmt.split("-")[1].rstrip("bit")), group_size), group.count
        elif fmt == "awq-4bit":
            yield group.name, awq_tensor_bytes(rows, cols, group_size), group.count
        elif fmt.startswith("gguf-"):
            role = _GGUF_ROLES.get(group.name.split(".")[0], "other")
            per_layer = group.count // layers
            for layer in range(layers):
                block_type = gguf_tensor_type(fmt, role, layer, layers)
                yield f"{group.name} ({block_type})", {"packed": gguf_tensor_bytes(rows * cols, block_type)}, per_layer
        else:
            raise ValueError(f"not a quantized format: {fmt}")


_PART_FORMULAS = {
    "packed": "codes per weight tensor", "absmax": "per-block absmax", "nested_absmax": "fp32 absmax per 256 blocks",
    "nested_quant_map": "256-entry fp32 dynamic map", "offset": "0-dim fp32 offset", "quant_map": "16-entry fp32 code table",
    "SCB": "fp32 scale per output row", "qzeros": "int32 packed zeros per group", "scales": "fp16 scale per group",
    "g_idx": "int32 group index per input",
}


@lru_cache(maxsize=64)  # solvers plan one model many times; the weights do not change with batch or rank
def quantized_weight_terms(model, fmt: str, blocksize: int = 64, double_quant: bool = True,
                           group_size: int = 128, moe_experts: str = "linear") -> tuple[tuple, tuple]:
    """(packed code terms, quantization-state terms) of all decoder linears: tensors x bytes each, 512 B-rounded."""
    counts: dict[tuple, int] = {}
    for name, sizes, count in quantized_linear_tensors(model, fmt, blocksize, double_quant, group_size, moe_experts):
        for part, nbytes in sizes.items():
            key = (name, part, nbytes)
            counts[key] = counts.get(key, 0) + count
    codes, state = [], []
    for (name, part, nbytes), count in counts.items():
        item = term(f"{name}.{part}" if part != "packed" else name, f"tensors x {_PART_FORMULAS[part]} ({fmt})",
                    (("tensors", count), ("B each", nbytes)), "bitsandbytes/GPTQ/AWQ/ggml layouts (weights.py)",
                    rounding=ALLOCATION)
        (codes if part == "packed" else state).append(item)
    return tuple(codes), tuple(state)


def quantized_weight_bytes(model, fmt: str, blocksize: int = 64, double_quant: bool = True,
                           group_size: int = 128, moe_experts: str = "linear") -> tuple[int, int]:
    """(packed code bytes, quantization-state bytes) of all decoder linears, allocator-rounded."""
    codes, state = quantized_weight_terms(model, fmt, blocksize, double_quant, group_size, moe_experts)
    return total(codes), total(state)


def tensor_group_terms(groups, bytes_per_element: int, dtype: str = "") -> list:
    """One term per TensorGroup: tensors x elements x B/element, each tensor 512 B-rounded."""
    label = f"B ({dtype})" if dtype else "B/element"
    return [term(g.name, "tensors x elements x bytes per element",
                 (("tensors", g.count), ("elements", g.numel), (label, bytes_per_element)),
                 "parameter shapes (parameters.py)", rounding=ALLOCATION) for g in groups]


def tensor_group_bytes(groups, bytes_per_element: int) -> int:
    """Allocator-rounded bytes of a list of TensorGroups held in one dtype."""
    return total(tensor_group_terms(groups, bytes_per_element))


def gguf_embedding_terms(model, fmt: str) -> list:
    """GGUF also quantizes token_embd (base type) and output (Q6_K for the k-quant mixes):
    ceil(elements / block elements) x block bytes each (ggml type traits)."""
    roles = ("token_embd",) if model.tie_word_embeddings else ("token_embd", "output")
    terms = []
    for role in roles:
        block_type = gguf_tensor_type(fmt, role)
        elements, nbytes = GGUF_BLOCKS[block_type]
        terms.append(term(f"{role} ({block_type})", "blocks x bytes per block",
                          (("blocks", ceil_div(model.vocab_size * model.hidden_size, elements)), ("B/block", nbytes)),
                          "ggml type traits (ggml.c)"))
    return terms

