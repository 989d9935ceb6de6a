"""End to end: hostile files and flags through the real CLI in a subprocess, under 5 s and 512 MB.

Each case is a class of input from issue 14; the many variants of each class run in-process in
test_hostile_parsers.py, so this file stays at a handful of subprocess starts.
"""
from __future__ import annotations

import json
import os

import pytest

from hostile_files import DEEP_JSON, LLAMA_CONFIG, assert_refused, model_folder, one_tensor, safetensors_bytes


def test_deeply_nested_config_json_is_refused_in_one_line(tmp_path):
    folder = model_folder(tmp_path, config=DEEP_JSON)
    assert "nested too deeply" in assert_refused("fit", "--model", str(folder), "--gpu", "t4")


def test_fifo_named_model_safetensors_is_refused_not_waited_on(tmp_path):
    folder = model_folder(tmp_path)
    os.mkfifo(folder / "model.safetensors")
    assert "not a regular file" in assert_refused("fit", "--model", str(folder), "--gpu", "t4")


def test_shard_linked_from_outside_the_model_folder_is_refused_without_reading_it(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"SECRETKEY" * 100)
    folder = model_folder(tmp_path)
    (folder / "model.safetensors").symlink_to(outside)
    err = assert_refused("fit", "--model", str(folder), "--gpu", "t4")
    assert "outside the model folder" in err
    assert str(int.from_bytes(b"SECRETKE", "little")) not in err


def test_tensor_name_with_newlines_cannot_forge_output_lines(tmp_path):
    folder = model_folder(tmp_path, files={"model.safetensors": one_tensor("w\nFITS: needs 1 GiB\nerror: x", "Q9")})
    err = assert_refused("fit", "--model", str(folder), "--gpu", "t4")
    assert len(err.splitlines()) == 1 and "\\nFITS" in err


def test_header_of_a_million_empty_tensors_is_refused_in_milliseconds_not_parsed(tmp_path):
    entry = b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    header = b"{" + b",".join(entry % i for i in range(400_000)) + b"}"
    folder = model_folder(tmp_path, files={"model.safetensors": safetensors_bytes(header)})
    assert "at most 131072 tensors" in assert_refused("fit", "--model", str(folder), "--gpu", "t4")


def test_gpu_profile_with_terminal_escapes_in_its_name_is_refused(tmp_path):
    profile = tmp_path / "evil.toml"
    profile.write_text('name = "\\u001b[2J\\u001b[31mH100"\ntotal_memory_bytes = 80000000000\n')
    assert "printable" in assert_refused("fit", "--model", "7b", "--gpu", str(profile))


def test_gpu_profile_with_boolean_memory_is_refused_not_a_one_byte_gpu(tmp_path):
    profile = tmp_path / "bool.toml"
    profile.write_text('name = "mine"\ntotal_memory_bytes = true\n')
    assert "total_memory_bytes" in assert_refused("fit", "--model", "7b", "--gpu", str(profile))


@pytest.mark.parametrize("flags", [
    ("--rank", "2147483648"), ("--batch", "2147483648"), ("--seq", str(2**63)),
    ("--rank", "٣"), ("--lora-alpha", "nan"),
], ids=lambda f: " ".join(f))
def test_absurd_or_non_ascii_numeric_flags_are_one_line_errors(flags):
    assert_refused("fit", "--model", "7b", "--gpu", "t4", *flags)


def test_unknown_home_directory_in_a_model_path_is_a_one_line_error():
    assert "no such user" in assert_refused("fit", "--model", "~no_such_user_vramplan/config.json", "--gpu", "t4")


def test_a_valid_model_folder_still_plans(tmp_path):
    """The guard cases above are refusals; the same folder with sound files plans normally."""
    folder = model_folder(tmp_path, config=json.dumps(LLAMA_CONFIG))
    from hostile_files import run_cli
    rc, out, err, _ = run_cli("fit", "--model", str(folder), "--gpu", "a100-80gb")
    assert rc == 0 and "FITS" in out, err
