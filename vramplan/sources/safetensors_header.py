"""Read a safetensors header: tensor names, dtypes, shapes, and an exact parameter count.

Layout (huggingface/safetensors format spec): 8-byte little-endian header length N, then N
bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the data; offsets count from the end of the header. Only the header is read, plus, for
pre-quantized bitsandbytes 4-bit checkpoints, the small JSON quant-state tensor that holds the
original shape. Sharded checkpoints list their files in `model.safetensors.index.json`.
"""
from __future__ import annotations

import math
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from vramplan.errors import InputError
from vramplan.paths import model_root, regular_file_inside
from vramplan.sources.json_file import parse_json, read_json_object
from vramplan.text import shown, shown_value

MAX_HEADER_BYTES = 100_000_000
MAX_QUANT_STATE_BYTES = 65_536
MAX_INDEX_BYTES = 50_000_000
# The largest real single-file headers hold tens of thousands of tensors (DeepSeek-V3's index
# maps ~91k across 163 shards; unsharded MoE files a few 10k). A tensor entry holds dtype,
# shape (<= 16 dims), data_offsets: about 12 values.
MAX_TENSORS = 131_072
MAX_VALUES_PER_TENSOR = 32  # a 16-dim entry has 23 separators; typical entries 11
MIN_VALUES_ALLOWED = 2_000_000  # headroom for metadata strings full of commas (kohya LoRA tag lists)

ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}
# bitsandbytes 4-bit: `<w>` is packed uint8, these hold its quantization constants.
BNB_AUX_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")
BNB_STATE_SUFFIXES = {".quant_state.bitsandbytes__nf4": "nf4", ".quant_state.bitsandbytes__fp4": "fp4"}


class TensorInfo(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    nbytes: int
    data_offsets: tuple[int, int]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_bytes: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and check the header of one .safetensors file; InputError on anything malformed.

    Never echoes the file's bytes: a file that is not safetensors (say a link to some other
    file) would otherwise print its first 8 bytes as a "header length".
    """
    path = Path(path)
    origin = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(origin, "not a regular file (a FIFO, device or folder); a .safetensors file is a file")
        file_bytes = info.st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise InputError(origin, "truncated safetensors file: shorter than the 8-byte header length")
            (header_bytes,) = struct.unpack("<Q", prefix)
            if header_bytes > MAX_HEADER_BYTES or 8 + header_bytes > file_bytes:
                raise InputError(origin, f"not a safetensors file: its 8-byte header length is larger than "
                                         f"the file ({file_bytes} bytes) or the {MAX_HEADER_BYTES}-byte bound")
            raw = handle.read(header_bytes)
    except OSError as exc:
        raise InputError(origin, f"cannot read: {exc.strerror or exc.__class__.__name__}") from None
    if len(raw) < header_bytes:
        raise InputError(origin, "truncated safetensors header")
    _check_entry_count(raw, origin)
    header = parse_json(raw, origin, "safetensors header")
    del raw
    if not isinstance(header, dict):
        raise InputError(origin, "safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InputError(origin, "__metadata__ must be a JSON object of strings")
    data_bytes = file_bytes - 8 - header_bytes
    tensors = {name: _tensor(origin, name, entry, data_bytes) for name, entry in header.items()}
    return SafetensorsHeader(path, header_bytes, tensors, metadata)


def _check_entry_count(raw: bytes, origin: str) -> None:
    """Refuse, before parsing, headers with more objects or values than any real checkpoint.

    Each tensor is one JSON object (`{` counts it) holding at most ~23 values (`,` and `:` count
    them); braces or commas inside names and metadata only over-count, and at least 2M are
    allowed, so a real header is not refused. Worst case allowed: ~4M values, ~400 MB to parse.
    bytes.count runs at memory speed: a 100 MB header is refused in milliseconds, not parsed
    in 30 s and 1.5 GB.
    """
    objects = raw.count(b"{")
    if objects > MAX_TENSORS + 2:
        raise InputError(origin, f"safetensors header has {objects} objects; at most {MAX_TENSORS} tensors per file allowed")
    values = raw.count(b",") + raw.count(b":")
    if values > max(MIN_VALUES_ALLOWED, MAX_VALUES_PER_TENSOR * (objects + 1)):
        raise InputError(origin, f"safetensors header has {values} values for {objects} entries; "
                                 f"at most {MAX_VALUES_PER_TENSOR} per tensor allowed")


def _tensor(origin: str, name: str, entry: object, data_bytes: int) -> TensorInfo:
    where = f"tensor '{shown(name)}'"
    if not isinstance(entry, dict):
        raise InputError(origin, f"{where}: entry must be a JSON object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in ITEM_BYTES:
        raise InputError(origin, f"{where}: unknown dtype {shown_value(dtype)}; allowed: {', '.join(ITEM_BYTES)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 16 or not all(
        type(dim) is int and 0 <= dim < 2**48 for dim in shape
    ):
        raise InputError(origin, f"{where}: shape must be a list of at most 16 non-negative integers (got {shown_value(shape)})")
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise InputError(origin, f"{where}: data_offsets must be [begin, end] integers (got {shown_value(offsets)})")
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise InputError(origin, f"{where}: data_offsets {offsets} outside the {data_bytes} data bytes")
    numel = math.prod(shape)
    nbytes = numel * ITEM_BYTES[dtype]
    if nbytes != end - begin:
        raise InputError(origin, f"{where}: shape {shape} of {dtype} needs {nbytes} bytes, data_offsets give {end - begin}")
    return TensorInfo(name, dtype, tuple(shape), numel, nbytes, (begin, end))


@dataclass(frozen=True)
class Checkpoint:
    """One or more safetensors files read as a whole model."""

    headers: tuple[SafetensorsHeader, ...]

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return {name: info for header in self.headers for name, info in header.tensors.items()}

    @property
    def nbytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    @property
    def bnb_4bit_format(self) -> str | None:
        """'nf4' or 'fp4' when the checkpoint is a pre-quantized bitsandbytes 4-bit one."""
        for name in self.tensors:
            for suffix, quant_type in BNB_STATE_SUFFIXES.items():
                if name.endswith(suffix):
                    return quant_type
        return None

    def parameter_count(self) -> int:
        """Logical parameters: packed bnb-4bit weights count as their original shape,
        their quantization constants (absmax, quant maps, quant state) not at all."""
        total = 0
        for header in self.headers:
            states = {
                name[: -len(suffix)]: name
                for name in header.tensors
                for suffix in BNB_STATE_SUFFIXES
                if name.endswith(suffix)
            }
            for name, info in header.tensors.items():
                if name in states.values() or _is_bnb_aux(name, states):
                    continue
                if name in states:
                    total += _bnb_logical_numel(header, states[name], info)
                else:
                    total += info.numel
        return total


def _is_bnb_aux(name: str, states: dict[str, str]) -> bool:
    return any(name.endswith(suffix) and name[: -len(suffix)] in states for suffix in BNB_AUX_SUFFIXES)


def _bnb_logical_numel(header: SafetensorsHeader, state_name: str, packed: TensorInfo) -> int:
    """The original numel from the quant-state JSON (a uint8 tensor); two per byte if absent."""
    state = header.tensors[state_name]
    origin = str(header.path)
    if state.nbytes > MAX_QUANT_STATE_BYTES:
        raise InputError(origin, f"tensor '{shown(state_name)}': quant state of {state.nbytes} bytes is too large")
    try:
        with header.path.open("rb") as handle:
            handle.seek(header.data_start + state.data_offsets[0])
            quant_state = parse_json(handle.read(state.nbytes), origin, "quant state")
        shape = quant_state["shape"]
        if not (isinstance(shape, list) and shape and all(type(d) is int and d > 0 for d in shape)):
            raise ValueError(shape)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InputError(origin, f"tensor '{shown(state_name)}': quant state is not bitsandbytes JSON with a 'shape'") from None
    numel = math.prod(shape)
    if (numel + 1) // 2 != packed.numel:
        raise InputError(origin, f"tensor '{shown(state_name)}': shape {shape} does not match {packed.numel} packed bytes")
    return numel


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A .safetensors file, a `*.safetensors.index.json`, or a folder holding either.

    Files found in a folder (or named by its index) must be regular files inside it: a FIFO
    would hang the read, and a link out of the folder would read a file nobody named. The
    HF cache's links into its own `blobs/` are inside (`vramplan.paths.model_root`).
    """
    path = Path(path)
    if path.is_dir():
        root = model_root(path)
        index = sorted(path.glob("*.safetensors.index.json"))
        if index:
            return _read_index(index[0], root)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise InputError(str(path), "no *.safetensors files in this folder")
        return Checkpoint(tuple(read_header(regular_file_inside(f, root, str(f))) for f in files))
    if path.name.endswith(".index.json"):
        return _read_index(path, model_root(path.parent))
    return Checkpoint((read_header(path),))


def _read_index(path: Path, root: Path) -> Checkpoint:
    regular_file_inside(path, root, str(path))
    shards = [regular_file_inside(path.parent / shard, root, str(path)) for shard in _index_shards(path)]
    return Checkpoint(tuple(read_header(shard) for shard in shards))


def _index_shards(path: Path) -> list[str]:
    """Shard file names from an index's weight_map; each must be a plain name in the folder."""
    origin = str(path)
    index = read_json_object(path, MAX_INDEX_BYTES, "safetensors index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(origin, "weight_map must be a non-empty JSON object of tensor -> file")
    for shard in weight_map.values():
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise InputError(origin, f"weight_map: shard {shown_value(shard)} must be a .safetensors file name in the same folder")
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        if not (path.parent / shard).exists():
            raise InputError(origin, f"weight_map: shard '{shown(shard)}' is missing")
    return shards
