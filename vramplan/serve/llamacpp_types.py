"""ggml tensor types as GGUF files store them: id -> (name, elements per block, bytes per block).

From ggml/include/ggml.h (`enum ggml_type`) and ggml/src/ggml.c (`type_traits`: blck_size, type_size),
llama.cpp 0c1e570 (vendored by llama-cpp-python 0.3.36). The k-quant and legacy block sizes agree with
`vramplan.memory.weights.GGUF_BLOCKS` (a test checks), which holds only the types the catalog's
`--format gguf-*` mixes produce; this table covers every type a real file can hold.
"""
from __future__ import annotations

from vramplan.errors import InputError

GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 40),
    10: ("q2_k", 256, 84), 11: ("q3_k", 256, 110), 12: ("q4_k", 256, 144), 13: ("q5_k", 256, 176),
    14: ("q6_k", 256, 210), 15: ("q8_k", 256, 292), 16: ("iq2_xxs", 256, 66), 17: ("iq2_xs", 256, 74),
    18: ("iq3_xxs", 256, 98), 19: ("iq1_s", 256, 50), 20: ("iq4_nl", 32, 18), 21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82), 23: ("iq4_xs", 256, 136), 24: ("i8", 1, 1), 25: ("i16", 1, 2),
    26: ("i32", 1, 4), 27: ("i64", 1, 8), 28: ("f64", 1, 8), 29: ("iq1_m", 256, 56),
    30: ("bf16", 1, 2), 34: ("tq1_0", 256, 54), 35: ("tq2_0", 256, 66), 39: ("mxfp4", 32, 17),
    40: ("nvfp4", 64, 36), 41: ("q1_0", 128, 18), 42: ("q2_0", 64, 18),
}
TYPE_IDS = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}
UNQUANTIZED = frozenset({"f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64"})


def type_name(type_id: int, origin: str = "gguf") -> str:
    if type_id not in GGML_TYPES:
        raise InputError(origin, f"unknown ggml tensor type {type_id}; known: {sorted(GGML_TYPES)}")
    return GGML_TYPES[type_id][0]


def row_bytes(type_name_: str, row_elements: int) -> int:
    """ggml_row_size: row_elements / block elements x block bytes (a row is a whole number of blocks)."""
    _, elements, nbytes = GGML_TYPES[TYPE_IDS[type_name_]]
    return row_elements // elements * nbytes


def tensor_bytes(type_name_: str, shape: tuple[int, ...], origin: str = "gguf") -> int:
    """ggml_nbytes of a contiguous tensor: rows x row bytes. ggml requires ne[0] to be a multiple of
    the block size (ggml.c ggml_new_tensor_impl asserts it), so a tensor that breaks it is refused."""
    _, elements, _ = GGML_TYPES[TYPE_IDS[type_name_]]
    if shape[0] % elements:
        raise InputError(origin, f"row of {shape[0]} elements is not a multiple of the {type_name_} block ({elements})")
    rows = 1
    for dim in shape[1:]:
        rows *= dim
    return rows * row_bytes(type_name_, shape[0])
