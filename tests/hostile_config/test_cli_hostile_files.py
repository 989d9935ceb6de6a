"""Hostile model folders and matrix files through the CLI, in a subprocess as a user runs it:
exit 2, at most two stderr lines, no traceback, within 5 s."""
from __future__ import annotations

import json

import pytest
from _cli import assert_one_line_error, run_cli

LLAMA = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
         "num_attention_heads": 32, "vocab_size": 32000}


@pytest.mark.parametrize("fields, names", [
    ({"attention_bias": "false"}, "attention_bias: must be true or false"),
    ({"max_position_embeddings": 0}, "max_position_embeddings: must be an integer from 1 to"),
    ({"hidden_size": 10**12}, "hidden_size: must be an integer from 1 to 131072"),
    ({"num_hidden_layers": "32"}, "num_hidden_layers"),
    ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": "yes"}}, "load_in_4bit"),
])
def test_fit_on_a_model_folder_with_a_bad_config_field_is_a_one_line_error(tmp_path, fields, names):
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, **fields}))
    assert_one_line_error(run_cli("fit", "--model", str(tmp_path), "--gpu", "t4"), names)


def _matrix(tmp_path, text: str | bytes):
    path = tmp_path / "matrix.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


CASE = '[[case]]\nid = "x"\nmodel = "7b"\n'


@pytest.mark.parametrize("text, names", [
    pytest.param("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 8 levels", id="deep-array"),
    pytest.param(".".join(["a"] * 5000) + " = 1\n", "nested more than 8 levels", id="5000-level-dotted-key"),
    pytest.param("[defaults]\n" + ".".join(["k"] * 5000) + " = 1\n", "nested more than 8", id="deep-defaults"),
    pytest.param("case = 5\n", "case: must be an array of tables", id="case-not-tables"),
    pytest.param("defaults = [1]\n", "defaults: must be a table", id="defaults-not-a-table"),
    pytest.param("cases = []\n", "cases: is not a matrix key", id="unknown-top-key"),
    pytest.param(CASE + 'warmup_steps = "many"\n', "warmup_steps: must be an integer from 1 to 1000", id="steps-str"),
    pytest.param(CASE + "measured_steps = 1000000000\n", "measured_steps", id="steps-huge"),
    pytest.param(CASE + "layers = [4, true]\n", "layers: must be an integer", id="layers-bool"),
    pytest.param(CASE + "gpu = 3\n", "gpu: must be a non-empty string", id="gpu-int"),
    pytest.param(CASE + "warmup_steps = " + "9" * 5000 + "\n", "not valid TOML", id="5000-digit-int"),
    pytest.param(CASE + "micro_batch_size = [[[[[[1]]]]]]\n", "nested more than 8", id="deep-run-field"),
    pytest.param(b'[[case]]\nid = "\xff"\n', "is not UTF-8", id="not-utf8"),
    pytest.param("# " + "x" * (2 << 20) + "\n", "a matrix file is at most 1048576", id="huge-file"),
    pytest.param("[[case]\n", "not valid TOML", id="malformed"),
])
def test_validate_run_with_a_hostile_matrix_is_a_one_line_error(tmp_path, text, names):
    assert_one_line_error(run_cli("validate", "run", "--list", "--matrix", _matrix(tmp_path, text)), names)


def test_validate_run_with_a_folder_as_matrix_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_cli("validate", "run", "--list", "--matrix", str(tmp_path)), "not a regular file")
