"""`compare --engine`: one row per GPU or model of the engine's headline figures, equal to `serve`'s plan."""
from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from vramplan.cli.main import main
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model
from vramplan.serve import hf, llamacpp, vllm


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def serve_plan_json(capsys, *argv):
    main(["serve", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_vllm_rows_are_serves_plan_for_each_gpu(capsys):
    flags = ["--model", "mistral-7b", "--format", "awq-4bit", "--max-model-len", "32768"]
    code, out, err = run_cli(capsys, "compare", "--engine", "vllm", "--gpus", "l4,a10g,4090,a100-80g", *flags, "--json")
    data = json.loads(out)
    assert code == 0 and err == "" and data["engine"] == "vllm" and data["compare"] == "gpu"
    assert [row["name"] for row in data["rows"]] == ["l4", "a10g", "rtx4090", "a100-80g"]
    for row in data["rows"]:
        plan = serve_plan_json(capsys, "--engine", "vllm", "--gpu", row["name"], *flags)
        assert row["starts"] == plan["fits"]
        assert row["kv_pool_bytes"] == plan["available_kv_bytes"]
        assert row["kv_cache_tokens"] == plan["kv_cache_tokens"]
        assert row["max_concurrency"] == plan["max_concurrency"]
        assert row["largest_max_model_len"] == plan["largest_max_model_len"]
        assert row["max_model_len"] == 32768


def test_vllm_row_that_does_not_start_carries_the_startup_error(capsys):
    code, out, _ = run_cli(capsys, "compare", "--engine", "vllm", "--gpus", "l4", "--model", "llama-3.1-8b", "--json")
    row = json.loads(out)["rows"][0]
    plan = vllm.plan_vllm(resolve_model("llama-3.1-8b"), get_gpu("l4"), vllm.VllmSettings())
    assert not plan.fits and row["starts"] is False
    assert row["note"] == plan.startup_error.splitlines()[0]
    assert row["largest_max_model_len"] == plan.largest_max_model_len < plan.max_model_len


def test_vllm_flags_change_the_rows(capsys):
    base = ["compare", "--engine", "vllm", "--gpus", "l4", "--model", "llama-3.1-8b", "--max-model-len", "8192", "--json"]
    auto = json.loads(run_cli(capsys, *base)[1])["rows"][0]
    fp8 = json.loads(run_cli(capsys, *base, "--kv-cache-dtype", "fp8")[1])["rows"][0]
    less = json.loads(run_cli(capsys, *base, "--gpu-memory-utilization", "0.6")[1])["rows"][0]
    assert fp8["kv_cache_tokens"] > auto["kv_cache_tokens"]  # one byte per element instead of two
    assert less["kv_pool_bytes"] < auto["kv_pool_bytes"]


def test_llamacpp_models_rows_match_serves_plan_and_csv_agrees(capsys):
    flags = ["--gpu", "4090", "--format", "gguf-q4_k_m", "--host-ram", "64GiB", "--ctx-size", "8192"]
    code, out, _ = run_cli(capsys, "compare", "--engine", "llama.cpp", "--models", "llama-3.1-8b,llama-3.1-70b", *flags, "--json")
    rows = json.loads(out)["rows"]
    assert code == 0 and [row["name"] for row in rows] == ["llama-3.1-8b", "llama-3.1-70b"]
    for row in rows:
        plan = serve_plan_json(capsys, "--engine", "llama.cpp", "--model", row["name"], *flags)
        assert row["fits"] == plan["fits"]
        assert row["n_gpu_layers"] == plan["placement"]["n_gpu_layers"]
        assert row["max_gpu_layers"] == plan["max_gpu_layers"]
        assert row["gpu_bytes"] == plan["placement"]["gpu_bytes"]
        assert row["host_bytes"] == plan["placement"]["host_bytes"]
        assert row["max_ctx_size"] == plan["max_ctx_size"]
    assert rows[1]["n_gpu_layers"] < rows[1]["layers_total"]  # a 70B Q4_K_M does not all fit on 24 GB
    _, out, _ = run_cli(capsys, "compare", "--engine", "llama.cpp", "--models", "llama-3.1-8b,llama-3.1-70b", *flags, "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["gpu_bytes"]) for r in table] == [row["gpu_bytes"] for row in rows]


def test_llamacpp_host_ram_too_small_says_so_in_the_table(capsys):
    code, out, _ = run_cli(capsys, "compare", "--engine", "llama.cpp", "--gpus", "4090,a100-80g", "--model", "llama-3.1-70b",
                           "--format", "gguf-q4_k_m", "--host-ram", "16GiB", "--ctx-size", "8192")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "llama-3.1-70b on each GPU: serving with llama.cpp"
    assert lines[3].split()[:2] == ["rtx4090", "NO"] and lines[4].split()[:2] == ["a100-80g", "yes"]
    assert "note: rtx4090: host RAM too small" in out


def test_hf_rows_are_todays_inference_rows(capsys):
    _, engine_out, _ = run_cli(capsys, "compare", "--engine", "hf", "--gpus", "t4,l4", "--model", "7b", "--seq", "2048", "--json")
    _, run_out, _ = run_cli(capsys, "compare", "--method", "inference", "--gpus", "t4,l4", "--model", "7b", "--seq", "2048", "--json")
    assert json.loads(engine_out)["rows"] == json.loads(run_out)["rows"]
    args = argparse.Namespace(seq=2048, batch=None, max_new_tokens=None, format=None)
    plan = hf.plan_from_args(resolve_model("7b"), get_gpu("t4"), args)
    assert json.loads(engine_out)["rows"][0]["required_bytes"] == plan.breakdown.required_bytes


@pytest.mark.parametrize("argv, flag, message", [
    (["--engine", "vllm", "--ctx-size", "4096"], "--ctx-size", "belongs to --engine llama.cpp, not vllm"),
    (["--max-model-len", "4096"], "--max-model-len", "belongs to --engine vllm: add --engine vllm"),
    (["--engine", "llama.cpp", "--method", "lora"], "--method", "is a training-run flag"),
    (["--host-ram", "64GiB"], "--host-ram", "belongs to --engine llama.cpp"),
    (["--engine", "vllm", "--kv-cache-dtype", "bf16"], "--kv-cache-dtype", "one of auto, fp8"),
])
def test_a_flag_of_the_wrong_engine_is_a_one_line_error(capsys, argv, flag, message):
    code, out, err = run_cli(capsys, "compare", "--gpus", "l4", "--model", "llama-3.1-8b", *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {flag}: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_model_the_engine_refuses_is_a_row_with_the_reason(capsys):
    code, out, _ = run_cli(capsys, "compare", "--engine", "vllm", "--models", "mistral-7b,llama-3.1-8b", "--gpu", "l4",
                           "--max-model-len", "65536", "--json")
    rows = json.loads(out)["rows"]
    assert code == 0 and rows[0]["starts"] is None and "max_position_embeddings=32768" in rows[0]["note"]
    assert rows[1]["max_model_len"] == 65536


def test_engine_rows_use_llamacpp_settings_flags():
    args = argparse.Namespace(n_gpu_layers="20", ctx_size=4096, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="auto",
                              n_parallel=2, kv_unified=False, no_kv_offload=False, no_mmap=False, ubatch_size=512,
                              batch_size=2048, swa_full=False, host_ram_bytes=None, format="gguf-q4_k_m")
    from vramplan.serve.headline import engine_row

    row = engine_row("llama.cpp", "l4", resolve_model("llama-3.1-8b"), get_gpu("l4"), args)
    plan = llamacpp.plan_from_args(resolve_model("llama-3.1-8b"), get_gpu("l4"), args)
    assert row["n_gpu_layers"] == 20 == plan.placement.n_gpu_layers and row["gpu_bytes"] == plan.placement.gpu_bytes
