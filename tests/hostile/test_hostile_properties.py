"""Property: whatever bytes or values reach a parser vramplan owns, only InputError escapes.

Inputs mix raw bytes with near-valid structures (real field names, real dtypes, deep nesting,
huge and boolean numbers, control characters), so the examples reach past the first check.
"""
from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from vramplan.errors import InputError
from vramplan.gpus import gpu_from_toml, parse_size
from vramplan.results_files import read_csv_rows
from vramplan.sources.json_file import read_json_object
from vramplan.sources.safetensors_header import ITEM_BYTES, read_checkpoint
from vramplan.text import parse_float, parse_int

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(list(ITEM_BYTES)), st.just(10**200),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=12)
nesting = st.integers(0, 3000).map(lambda n: "[" * n + "]" * n)


def _write(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="vramplan-hostile-"))
    path = folder / name
    path.write_bytes(data)
    return path


def only_input_error(call, *args) -> None:
    try:
        call(*args)
    except InputError:
        pass
    finally:
        for arg in args:
            if isinstance(arg, Path) and arg.parent.name.startswith("vramplan-hostile-"):
                shutil.rmtree(arg.parent)


@PROPERTY
@given(st.one_of(st.binary(max_size=200), values.map(lambda v: json.dumps(v).encode()), nesting.map(str.encode)))
def test_json_reader_raises_only_input_error(data):
    only_input_error(read_json_object, _write(data, "config.json"), 10_000_000, "config.json")


def _entry(dtype, shape, offsets) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


headers = st.one_of(
    st.binary(max_size=120),
    values.map(lambda v: json.dumps(v).encode()),
    nesting.map(str.encode),
    st.dictionaries(st.text(max_size=10), st.builds(_entry, values, values, values), max_size=3).map(lambda d: json.dumps(d).encode()),
    st.builds(lambda name, dtype, dims: json.dumps({name: _entry(dtype, dims, [0, 8])}).encode(),
              st.text(max_size=10), st.sampled_from(list(ITEM_BYTES)), st.lists(st.integers(-2, 2**50), max_size=17)),
)


@PROPERTY
@given(headers, st.binary(max_size=32), st.booleans())
def test_safetensors_header_reader_raises_only_input_error(header, data, honest_length):
    length = len(header) if honest_length else len(header) + len(data) + 1
    path = _write(struct.pack("<Q", length) + header + data, "model.safetensors")
    only_input_error(lambda p: read_checkpoint(p).parameter_count(), path)


toml_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.booleans().map(lambda b: str(b).lower()), st.floats().map(repr),
    st.text(max_size=12).map(json.dumps), nesting.map(lambda s: s or "[]"), st.just("9" * 5000),
)
toml_fields = st.sampled_from(["key", "name", "vendor", "total_memory_bytes", "bf16", "fp8", "usable_fraction",
                               "cuda_context_bytes", "aliases", "memory_bandwidth_gbps", "a.b.c", "x"])


@PROPERTY
@given(st.one_of(st.text(max_size=200),
                 st.dictionaries(toml_fields, toml_values, max_size=5).map(
                     lambda d: "\n".join(f"{k} = {v}" for k, v in d.items()))))
def test_gpu_toml_reader_raises_only_input_error(text):
    only_input_error(gpu_from_toml, text, "g.toml", "g")


@PROPERTY
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A[0-9.]{0,30}\s?(g|gb|gib|t|tib|m|mib|x)\Z")))
def test_size_and_number_parsers_raise_only_input_error(text):
    only_input_error(parse_size, text)
    only_input_error(parse_int, text, "--n")
    only_input_error(parse_float, text, "--x")


@PROPERTY
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.lists(st.text(max_size=10), max_size=5), max_size=5).map(
                     lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass"))))
def test_results_csv_reader_raises_only_input_error(data):
    only_input_error(read_csv_rows, _write(data, "r.csv"))
