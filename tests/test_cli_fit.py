"""`vramplan fit`, `models`, `gpus`: output, exit codes, and one-line errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vramplan.cli.main import main
from vramplan.estimate import estimate


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_13b_on_t4_prints_verdict_peak_capacity_headroom_and_table(capsys):
    code, out, err = run_cli(capsys, "fit", "--model", "13b", "--gpu", "t4")
    expected = estimate(model="13b", gpu="t4")
    assert code == (0 if expected.fits else 1)
    assert ("FITS" if expected.fits else "DOES NOT FIT") in out
    assert f"{expected.capacity_bytes / 2**30:.2f} GiB" in out
    assert f"headroom {expected.headroom_bytes / 2**30:.2f} GiB" in out
    assert "quantized weights" in out and "logits + loss" in out and "activations" in out
    assert err == ""


def test_fit_json_is_the_full_breakdown(capsys):
    code, out, _ = run_cli(capsys, "fit", "--model", "8b", "--gpu", "a100-80g", "--seq", "2048", "--json")
    data = json.loads(out)
    expected = estimate(model="8b", gpu="a100-80g", seq_len=2048)
    assert data["peak_allocated_bytes"] == expected.peak_allocated_bytes
    assert data["run"]["seq_len"] == 2048 and data["fits"] is True and code == 0
    assert set(data["components"]) >= {"activations", "logits_loss", "cuda_context"}


def test_fit_that_does_not_fit_exits_1(capsys):
    code, out, _ = run_cli(capsys, "fit", "--model", "70b", "--gpu", "t4", "--method", "full")
    assert code == 1 and "DOES NOT FIT" in out


def test_every_runconfig_knob_has_a_flag(capsys):
    from vramplan.present import flag_name
    from vramplan.specs.run import RunConfig

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = capsys.readouterr().out
    for field in RunConfig.model_fields:
        assert flag_name(field) in help_text, field


@pytest.mark.parametrize("argv, field", [
    (["fit", "--model", "llama-9000"], "model"),
    (["fit", "--gpu", "gtx9999"], "gpu"),
    (["fit", "--batch", "0"], "--micro-batch-size"),
    (["fit", "--seq", "-5"], "--seq-len"),
    (["fit", "--rank", "0"], "--lora-rank"),
    (["fit", "--compute-dtype", "fp12"], "--compute-dtype"),
    (["fit", "--method", "qlora", "--format", "bf16"], "weight_format"),
    (["fit", "--quant-blocksize", "48"], "--quant-blocksize"),
    (["fit", "--targets", "q_proj,nonsense"], "lora_targets"),
    (["fit", "--gpu", "t4", "--compute-dtype", "bf16"], "compute_dtype"),
    (["fit", "--batch", "two"], "--batch"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, field):
    with pytest.raises(SystemExit) as exited:
        code = main(argv)
        raise SystemExit(code)
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error:") and field in err, err
    assert "Traceback" not in err


def test_malformed_config_json_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "fit", "--model", str(bad))
    assert code == 2 and err.count("\n") == 1 and "config.json" in err
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    code, _, err = run_cli(capsys, "fit", "--model", str(bad))
    assert code == 2 and err.count("\n") == 1


def test_truncated_and_oversized_safetensors_headers_are_exit_2(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 256}))
    (folder / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{")
    code, _, err = run_cli(capsys, "fit", "--model", str(folder))
    assert code == 2 and err.count("\n") == 1 and "safetensors" in err
    (folder / "model.safetensors").write_bytes(b"\x05\x00")
    code, _, err = run_cli(capsys, "fit", "--model", str(folder))
    assert code == 2 and err.count("\n") == 1


def test_fit_accepts_a_size_and_a_config_path(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
        "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000}))
    code, out, _ = run_cli(capsys, "fit", "--model", str(cfg), "--gpu", "24GiB", "--json")
    assert code == 0 and json.loads(out)["capacity_bytes"] == 24 * 2**30


def test_models_and_gpus_list_the_catalog(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "llama-2-13b" in out and "qwen2.5-72b" in out
    code, out, _ = run_cli(capsys, "gpus", "--json")
    assert code == 0 and any(g["key"] == "t4" for g in json.loads(out))


def test_the_installed_command_runs_and_exits_with_the_verdict():
    done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "fit", "--model", "13b", "--gpu", "t4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1) and "Tesla T4" in done.stdout and done.stderr == ""


def test_a_prequantized_checkpoint_plans_in_its_own_format(tmp_path):
    from vramplan.estimate import estimate

    folder = tmp_path / "gptq-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "vocab_size": 32000,
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}))
    inference = estimate(model=str(folder), gpu="t4", method="inference")
    assert inference.weight_format == "gptq-4bit"
    assert any("taken from the checkpoint" in note for note in inference.notes)
    asked = estimate(model=str(folder), gpu="t4", method="inference", weight_format="fp16")
    assert asked.weight_format == "fp16" and asked.peak_allocated_bytes > inference.peak_allocated_bytes
