"""The bounded GGUF header reader: agrees with gguf-py's reader on written files, refuses hostile headers."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from vramplan.errors import InputError
from vramplan.sources import gguf_header
from vramplan.sources.gguf_header import SkippedArray, read_gguf_header

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _header(n_tensors=0, kv=(), tensors=(), version=3, magic=b"GGUF") -> bytes:
    """A GGUF header by hand: kv items are (key, type id, packed value), tensors (name, dims, type, offset)."""
    out = magic + struct.pack("<IQQ", version, n_tensors or len(tensors), len(kv))
    for key, value_type, packed in kv:
        out += _string(key) + struct.pack("<I", value_type) + packed
    for name, dims, ggml_type, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
    return out


def _write(tmp_path, data: bytes, data_bytes: int = 4096) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(data + b"\0" * data_bytes)
    return path


def test_hand_written_header_reads_back(tmp_path):
    kv = [("general.architecture", 8, _string("llama")), ("llama.block_count", 4, struct.pack("<I", 2)),
          ("general.alignment", 4, struct.pack("<I", 64))]
    path = _write(tmp_path, _header(kv=kv, tensors=[("token_embd.weight", (64, 10), 1, 0)]))
    header = read_gguf_header(path)
    assert header.architecture == "llama" and header.arch_value("block_count") == 2
    assert header.tensors[0].shape == (64, 10) and header.tensors[0].ggml_type == 1
    assert header.alignment == 64 and header.data_offset % 64 == 0


def test_long_arrays_keep_only_their_length(tmp_path):
    items = b"".join(_string(f"t{i}") for i in range(5000))
    kv = [("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 5000) + items),
          ("llama.attention.head_count_kv", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 8, 8, 4))]
    header = read_gguf_header(_write(tmp_path, _header(kv=kv)))
    assert header.metadata["tokenizer.ggml.tokens"] == SkippedArray("string", 5000)
    assert header.metadata["llama.attention.head_count_kv"] == [8, 8, 4]


@pytest.mark.parametrize("data, says", [
    (b"GGML" + b"\0" * 40, "magic"),
    (_header(version=1) + b"\0" * 8, "version"),
    (b"GGUF" + struct.pack("<IQQ", 3, gguf_header.MAX_TENSORS + 1, 0), "tensor count"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, gguf_header.MAX_KV + 1), "key-value count"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62), "key length"),
    (_header(kv=[("k", 9, struct.pack("<IQ", 4, 2**40))]), "array k"),
    (_header(kv=[("k", 13, b"")]), "unknown value type"),
    (_header(kv=[("k", 4, b"\0\0\0\0"), ("k", 4, b"\0\0\0\0")]), "twice"),
    (_header(tensors=[("t", (1, 1, 1, 1, 1), 0, 0)]), "dimensions"),
    (_header(tensors=[("t", (-1,), 0, 0)]), "shape"),
    (_header(kv=[("general.alignment", 4, struct.pack("<I", 48))]), "power of two"),
    (_header(kv=[("k", 8, struct.pack("<Q", 2) + b"\xff\xfe")]), "UTF-8"),
])
def test_hostile_headers_are_refused_by_name(tmp_path, data, says):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        read_gguf_header(path)
    assert says in caught.value.message and caught.value.field == str(path)


def test_truncated_header_is_refused(tmp_path):
    data = _header(tensors=[("token_embd.weight", (64, 10), 1, 0)])
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:-5])
    with pytest.raises(InputError, match="ends inside the header|runs past"):
        read_gguf_header(path)


def test_header_bound_is_enforced(tmp_path):
    path = _write(tmp_path, _header(kv=[("k", 8, _string("x" * 5000))]))
    with pytest.raises(InputError, match="runs past 1000 bytes"):
        read_gguf_header(path, max_header_bytes=1000)


@pytest.mark.parametrize("arch, weight_type", [("llama", "f16"), ("qwen2", "q8_0"), ("gemma2", "q4_0")])
def test_agrees_with_gguf_py_on_written_models(tmp_path, arch, weight_type):
    gguf = pytest.importorskip("gguf")
    from llamacpp_tiny_gguf import TinyModel, write_tiny_gguf

    path = write_tiny_gguf(tmp_path / f"{arch}.gguf", TinyModel(arch=arch, weight_type=weight_type))
    ours, theirs = read_gguf_header(path), gguf.GGUFReader(str(path))
    assert ours.data_offset == theirs.data_offset
    assert [(t.name, t.ggml_type, t.shape, t.offset) for t in ours.tensors] == [
        (t.name, int(t.tensor_type), tuple(int(d) for d in t.shape), int(t.data_offset) - theirs.data_offset)
        for t in theirs.tensors]
    assert ours.arch_value("block_count") == 4
