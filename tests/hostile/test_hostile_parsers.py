"""Every class of hostile file or value, in-process: each ends as one InputError, nothing else."""
from __future__ import annotations

import json
import os
import struct

import pytest

from hostile_files import DEEP_JSON, HUGE_INT, LLAMA_CONFIG, model_folder, one_tensor, safetensors_bytes
from vramplan.errors import InputError
from vramplan.estimate import make_run
from vramplan.gpus import get_gpu, gpu_from_toml, parse_size
from vramplan.results_files import read_csv_rows
from vramplan.sources.local import find_in_hf_cache, load_local
from vramplan.sources.safetensors_header import read_checkpoint, read_header
from vramplan.specs.bounds import GPU_BOUNDS, RUN_BOUNDS
from vramplan.text import parse_float, parse_int, shown


def refused(call, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("text", [DEEP_JSON, '{"a": ' + DEEP_JSON + "}", '{"hidden_size": ' + HUGE_INT + "}", "\xff"])
def test_config_json_that_json_loads_chokes_on_is_an_input_error(tmp_path, text):
    folder = model_folder(tmp_path, config="")
    (folder / "config.json").write_bytes(text.encode("latin-1") if text == "\xff" else text.encode())
    refused(load_local, folder)


@pytest.mark.parametrize("header", [
    DEEP_JSON.encode(),
    b'{"w": ' + DEEP_JSON.encode() + b"}",
    b'{"w": {"dtype": "F32", "shape": [' + HUGE_INT.encode() + b'], "data_offsets": [0, 0]}}',
    b'{"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}',
    b'{"w": {"dtype": {"a": 1}, "shape": [2], "data_offsets": [0, 8]}}',
    b'{"w": {"dtype": "F32", "shape": ' + DEEP_JSON.encode()[:1800] + b', "data_offsets": [0, 8]}}',
    b'{"__metadata__": {"format": ' + b"[" * 900 + b"]" * 900 + b"}}",
], ids=["deep", "deep-entry", "huge-int", "dtype-list", "dtype-dict", "deep-shape", "deep-metadata"])
def test_safetensors_header_that_would_raise_anything_else_is_an_input_error(tmp_path, header):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(header, b"\0" * 8))
    refused(read_header, path)


def test_header_with_more_entries_than_any_real_checkpoint_is_refused_before_parsing(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(b"{" + b",".join(b'"t%d":{}' % i for i in range(300_000)) + b"}"))
    assert "tensors per file" in refused(read_header, path).message


def test_header_that_is_one_huge_list_is_refused_before_parsing(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(b'{"w": {"shape": [' + b"0," * 3_000_000 + b"0]}}"))
    assert "values" in refused(read_header, path).message


@pytest.mark.parametrize("shard", [["a.safetensors"], {"a": 1}, None, 7])
def test_index_shard_name_that_is_not_a_string_is_an_input_error(tmp_path, shard):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": shard}}))
    refused(read_checkpoint, index)


def test_index_that_is_deeply_nested_is_an_input_error(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": ' + DEEP_JSON + "}")
    refused(read_checkpoint, index)


def test_quant_state_that_is_deeply_nested_is_an_input_error(tmp_path):
    state = DEEP_JSON.encode()[:20000]
    header = {
        "w": {"dtype": "U8", "shape": [2, 1], "data_offsets": [0, 2]},
        "w.quant_state.bitsandbytes__nf4": {"dtype": "U8", "shape": [len(state)], "data_offsets": [2, 2 + len(state)]},
    }
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(header, b"\0\0" + state))
    refused(read_checkpoint(path).parameter_count)


def test_header_length_of_a_non_safetensors_file_is_never_echoed(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"password=hunter2\n")
    error = refused(read_header, path)
    assert str(int.from_bytes(b"password", "little")) not in str(error)


def test_fifo_shard_named_by_an_index_is_refused_not_opened(tmp_path):
    os.mkfifo(tmp_path / "a.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "a.safetensors"}}))
    assert "regular file" in refused(read_checkpoint, index).message


def test_hf_cache_links_into_their_own_blobs_are_still_read(tmp_path, monkeypatch):
    """The link rule must not break the HF cache layout: snapshots/<c>/x -> ../../blobs/<hash>."""
    repo = tmp_path / "models--org--m"
    blobs, snap = repo / "blobs", repo / "snapshots" / "abc1234"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (blobs / "c").write_text(json.dumps(LLAMA_CONFIG))
    (blobs / "w").write_bytes(one_tensor())
    (snap / "config.json").symlink_to("../../blobs/c")
    (snap / "model.safetensors").symlink_to("../../blobs/w")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc1234")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert load_local(find_in_hf_cache("org/m")).parameter_count == 2


def test_oversized_refs_main_is_refused(tmp_path, monkeypatch):
    repo = tmp_path / "models--org--m"
    (repo / "snapshots" / "abc1234").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_bytes(b"a" * 2_000_000)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    refused(find_in_hf_cache, "org/m")


def test_config_json_linked_from_outside_the_model_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere.json").write_text(json.dumps(LLAMA_CONFIG))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to(tmp_path / "elsewhere.json")
    assert "outside the model folder" in refused(load_local, folder).message


@pytest.mark.parametrize("text", [
    "x = " + "[" * 5000 + "]" * 5000,
    'name = "g"\ntotal_memory_bytes = 1000\n' + ".".join(["a"] * 5000) + " = 1",
    "total_memory_bytes = " + HUGE_INT,
    "total_memory_bytes = true",
    "total_memory_bytes = 16e9",
    'total_memory_bytes = "16GB"',
    "bf16 = 1",
    f"total_memory_bytes = {GPU_BOUNDS['total_memory_bytes'] + 1}",
    'name = "a\\nFITS"\ntotal_memory_bytes = 1000',
    'name = "\\u001b[31m"\ntotal_memory_bytes = 1000',
    'aliases = ["\\u0007"]\ntotal_memory_bytes = 1000',
    'name = "g"\ntotal_memory_bytes = 1000\n' + "# padding\n" * 20000,
], ids=["deep-array", "dotted-5000", "huge-int", "bool-memory", "float-memory", "string-memory", "int-bf16",
        "over-bound", "newline-name", "ansi-name", "bell-alias", "oversized"])
def test_gpu_profile_toml_that_is_hostile_is_an_input_error(text):
    error = refused(gpu_from_toml, text, "evil.toml", "evil")
    assert len(str(error)) < 400


def test_gpu_profile_file_that_is_a_fifo_is_refused_not_opened(tmp_path):
    os.mkfifo(tmp_path / "g.toml")
    refused(get_gpu, str(tmp_path / "g.toml"))


@pytest.mark.parametrize("text", ["9" * 400 + "GB", "٣GB", "²G", "1e400GB", "1" * 13 + "TiB", "1000000000TiB"])
def test_gpu_size_that_is_huge_or_not_ascii_is_an_input_error(text):
    refused(get_gpu, text)


def test_gpu_size_parsing_accepts_the_real_forms():
    assert parse_size("24GiB") == 24 * 2**30 and parse_size("24GB") == 24 * 10**9 and parse_size("80g") == 80 * 2**30


@pytest.mark.parametrize("text", ["²", "٣", "1_000", "0x10", "", "9" * 20, "1.5"])
def test_integers_are_ascii_digits_only(text):
    refused(parse_int, text, "--batch")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999", "٣", "1_0"])
def test_floats_are_finite_ascii_decimals_only(text):
    refused(parse_float, text, "--lora-alpha")


@pytest.mark.parametrize("field", sorted(RUN_BOUNDS))
def test_every_bounded_run_field_refuses_one_past_its_bound_and_accepts_the_bound(field):
    error = refused(make_run, **{field: RUN_BOUNDS[field] + 1})
    assert error.field == field and "at most" in error.message
    make_run(**{field: RUN_BOUNDS[field]})


@pytest.mark.parametrize("fields", [{"micro_batch_size": True}, {"lora_rank": "99999999"}, {"lora_alpha": float("nan")}, {"lora_alpha": float("inf")}])
def test_run_config_refuses_bools_and_non_finite_numbers(fields):
    refused(make_run, **fields)


def test_bounds_are_at_least_the_solvers_search_limits():
    """A solver's answer must be a value `fit` accepts (vramplan.solvers' default limits)."""
    import inspect

    from vramplan import solvers
    for function, field in ((solvers.max_micro_batch, "micro_batch_size"), (solvers.max_seq_len, "seq_len"),
                            (solvers.max_lora_rank, "lora_rank")):
        assert inspect.signature(function).parameters["limit"].default <= RUN_BOUNDS[field]


@pytest.mark.parametrize("data", [b"a,b\n\xff\xfe,1\n", b"a,b\n" + b"x" * 200_000 + b",1\n", b'a,b\n"' + b"y" * 200_000 + b'",1\n'],
                         ids=["not-utf8", "long-field", "long-quoted-field"])
def test_results_csv_that_is_not_utf8_or_has_huge_fields_is_an_input_error(tmp_path, data):
    path = tmp_path / "r.csv"
    path.write_bytes(data)
    refused(read_csv_rows, path)


def test_results_csv_over_the_size_bound_is_refused_without_reading(tmp_path):
    path = tmp_path / "r.csv"
    with path.open("wb") as handle:
        handle.truncate(17_000_000)
    assert "larger than" in refused(read_csv_rows, path).message


def test_untrusted_names_are_shown_with_control_characters_escaped():
    assert shown("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"


@pytest.mark.parametrize("text", ["a" * 300 + "/config.json", "/tmp/" + "b" * 256, "~no_such_user_vramplan/x"])
def test_model_path_with_a_long_component_or_unknown_user_is_an_input_error(text):
    from vramplan.resolve import resolve_model
    assert refused(resolve_model, text).field == "model"


def test_bound_tables_name_real_spec_fields():
    """A typo in a bounds table would silently bound nothing."""
    from vramplan.specs.bounds import MODEL_BOUNDS
    from vramplan.specs.gpu import GPUSpec
    from vramplan.specs.model import ModelSpec
    from vramplan.specs.run import RunConfig
    for table, spec in ((RUN_BOUNDS, RunConfig), (GPU_BOUNDS, GPUSpec), (MODEL_BOUNDS, ModelSpec)):
        assert set(table) <= set(spec.model_fields), set(table) - set(spec.model_fields)
