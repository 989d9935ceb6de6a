"""Read a GGUF file's header: version, key-value metadata, and each tensor's ggml type, shape and offset.

Layout (ggml/include/gguf.h and ggml/src/gguf.cpp, llama.cpp 0c1e570): magic "GGUF", uint32 version
(2 or 3), uint64 tensor count, uint64 KV count; then KV pairs (gguf string key, uint32 value type,
value); then per tensor: string name, uint32 n_dims (<= 4), n_dims x int64 ne, uint32 ggml type,
uint64 offset into the data section. The data section starts at the header end rounded up to
`general.alignment` (default 32). Strings are uint64 length + bytes; arrays are uint32 item type +
uint64 count + items. Everything is little-endian.

Only the header is read, from an open file, never mapped or executed; every count and length is
checked against a bound before anything is allocated, and large arrays (the tokenizer's vocabulary
and merges) are skipped over with only their length kept.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from vramplan.errors import InputError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT (gguf.h)
MAX_DIMS = 4  # GGML_MAX_DIMS
# Real files: a dense 70B has 724 tensors; fused-expert MoE files a few thousand. KV pairs: ~40.
MAX_TENSORS = 1_000_000
MAX_KV = 65_536
MAX_STRING_BYTES = 16 * 2**20  # the longest real value is a chat template (tens of KB)
MAX_ARRAY_ITEMS = 16 * 2**20  # vocabularies ~256k tokens, merges ~500k
MAX_HEADER_BYTES = 512 * 2**20  # a 256k vocabulary with merges is ~20 MB of header
MAX_NESTING = 4
KEPT_ARRAY_ITEMS = 1024  # arrays up to this long keep their values (per-layer head counts); longer ones only their length

# gguf value types (gguf.h enum gguf_type) -> struct format of one scalar
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
               7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}


class GGUFTensor(NamedTuple):
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # ne[0..n_dims): ne[0] is the row length, as ggml orders it
    offset: int  # bytes from the start of the data section

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


class SkippedArray(NamedTuple):
    """An array too long to keep (tokens, merges): its item type name and length."""
    item_type: str
    length: int


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict  # key -> int | float | bool | str | list | SkippedArray
    tensors: tuple[GGUFTensor, ...]
    alignment: int
    data_offset: int  # where the data section starts in the file
    file_bytes: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default=None):
        """`<architecture>.<key>` from the metadata, e.g. arch_value("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Reader:
    """Bounded little-endian reads from a file; every failure is an InputError naming the file."""

    def __init__(self, handle: BinaryIO, origin: str, limit: int) -> None:
        self.handle, self.origin, self.limit, self.position = handle, origin, limit, 0

    def fail(self, message: str) -> InputError:
        return InputError(self.origin, f"not a readable GGUF file: {message}")

    def take(self, count: int) -> bytes:
        if self.position + count > self.limit:
            raise self.fail(f"header runs past {self.limit} bytes")
        data = self.handle.read(count)
        if len(data) != count:
            raise self.fail("file ends inside the header")
        self.position += count
        return data

    def skip(self, count: int) -> None:
        if self.position + count > self.limit:
            raise self.fail(f"header runs past {self.limit} bytes")
        self.handle.seek(count, 1)
        self.position += count

    def scalar(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def count(self, what: str, bound: int) -> int:
        value = self.scalar("Q")
        if value > bound:
            raise InputError(self.origin, f"{what} is {value}; at most {bound} allowed")
        return value

    def string(self, what: str, keep: bool = True) -> str:
        length = self.count(f"{what} length", MAX_STRING_BYTES)
        if not keep:
            self.skip(length)
            return ""
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None


def _value(reader: _Reader, value_type: int, key: str, depth: int = 0):
    if value_type in _SCALARS:
        return reader.scalar(_SCALARS[value_type])
    if value_type == _STRING:
        return reader.string(f"value of {key}")
    if value_type != _ARRAY:
        raise reader.fail(f"key {key} has unknown value type {value_type}")
    if depth >= MAX_NESTING:
        raise reader.fail(f"key {key} nests arrays more than {MAX_NESTING} deep")
    item_type = reader.scalar("I")
    if item_type not in _TYPE_NAMES:
        raise reader.fail(f"key {key} has unknown array item type {item_type}")
    length = reader.count(f"array {key}", MAX_ARRAY_ITEMS)
    if length <= KEPT_ARRAY_ITEMS:
        return [_value(reader, item_type, key, depth + 1) for _ in range(length)]
    if item_type in _SCALARS:
        reader.skip(length * struct.calcsize("<" + _SCALARS[item_type]))
    elif item_type == _STRING:
        for _ in range(length):
            reader.string(f"item of {key}", keep=False)
    else:
        for _ in range(length):
            _value(reader, item_type, key, depth + 1)
    return SkippedArray(_TYPE_NAMES[item_type], length)


def read_gguf_header(path: Path | str, max_header_bytes: int = MAX_HEADER_BYTES) -> GGUFHeader:
    """The header of the GGUF file at `path`; InputError (naming the file) when it is not one or
    when a count or length is past the bounds above."""
    path = Path(path)
    origin = str(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(origin, f"cannot open GGUF file: {exc.strerror or exc}") from None
    with handle:
        file_bytes = handle.seek(0, 2)
        handle.seek(0)
        reader = _Reader(handle, origin, min(max_header_bytes, file_bytes))
        if reader.limit < 24 or reader.take(4) != MAGIC:
            raise InputError(origin, "not a GGUF file (no 'GGUF' magic at the start)")
        version = reader.scalar("I")
        if version not in SUPPORTED_VERSIONS:
            raise InputError(origin, f"GGUF version {version}; versions {SUPPORTED_VERSIONS} are read")
        n_tensors = reader.count("tensor count", MAX_TENSORS)
        n_kv = reader.count("key-value count", MAX_KV)
        metadata: dict = {}
        for _ in range(n_kv):
            key = reader.string("key")
            if key in metadata:
                raise reader.fail(f"key {key} appears twice")
            metadata[key] = _value(reader, reader.scalar("I"), key)
        tensors = []
        names = set()
        for _ in range(n_tensors):
            name = reader.string("tensor name")
            n_dims = reader.scalar("I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise reader.fail(f"tensor {name} has {n_dims} dimensions; 1 to {MAX_DIMS} allowed")
            shape = tuple(reader.scalar("q") for _ in range(n_dims))
            if any(dim < 0 or dim > 2**40 for dim in shape):
                raise reader.fail(f"tensor {name} has shape {shape}; each dimension 0 to 2^40")
            ggml_type, offset = reader.scalar("I"), reader.scalar("Q")
            if name in names:
                raise reader.fail(f"tensor {name} appears twice")
            names.add(name)
            tensors.append(GGUFTensor(name, ggml_type, shape, offset))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
            raise reader.fail(f"general.alignment is {alignment!r}; a power of two is required")
        data_offset = -(-reader.position // alignment) * alignment
    return GGUFHeader(path, version, metadata, tuple(tensors), alignment, data_offset, file_bytes)


__all__ = ["GGUFHeader", "GGUFTensor", "SkippedArray", "read_gguf_header"]
