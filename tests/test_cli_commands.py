"""`vramplan max`, `compare`, `sweep`, `explain` and `fit --emit hf`/advice: every format, bad input, help."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from vramplan import solvers
from vramplan.catalog import get_model
from vramplan.cli.main import main
from vramplan.estimate import estimate, make_run, plan
from vramplan.gpus import get_gpu


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- max --

@pytest.mark.parametrize("dimension, field", [("batch", "micro_batch_size"), ("seq", "seq_len"), ("rank", "lora_rank")])
def test_max_prints_the_solved_value_and_the_next_that_does_not_fit(capsys, dimension, field):
    code, out, err = run_cli(capsys, "max", dimension, "--model", "13b", "--gpu", "t4")
    expected = solvers.max_size(dimension, get_model("13b"), get_gpu("t4"), make_run())
    assert code == 0 and err == ""
    assert f"that fits: {expected}" in out and f"at {expected + 1}:" in out and "does not fit" in out


def test_max_json_has_value_and_the_bytes_on_both_sides(capsys):
    code, out, _ = run_cli(capsys, "max", "batch", "-m", "7b", "-g", "a10g", "--seq", "1024", "--json")
    data = json.loads(out)
    value = data["value"]
    assert code == 0 and data["field"] == "micro_batch_size"
    at = estimate(model="7b", gpu="a10g", seq_len=1024, micro_batch_size=value)
    above = estimate(model="7b", gpu="a10g", seq_len=1024, micro_batch_size=value + 1)
    assert at.fits and not above.fits
    assert data["required_bytes"] == at.required_bytes and data["next_required_bytes"] == above.required_bytes


def test_max_when_nothing_fits_exits_1(capsys):
    code, out, _ = run_cli(capsys, "max", "seq", "--model", "70b", "--gpu", "t4")
    assert code == 1 and "nothing fits" in out


def test_max_limit_caps_the_answer(capsys):
    code, out, _ = run_cli(capsys, "max", "batch", "-m", "tinyllama", "-g", "h200", "--limit", "5", "--json")
    assert code == 0 and json.loads(out)["value"] == 5


@pytest.mark.parametrize("argv, needle", [
    (["max", "width"], "invalid choice"),
    (["max", "rank", "--method", "full"], "--method"),
    (["max", "batch", "--model", "llama-9000"], "model"),
    (["max", "batch", "--gpu", "gtx9999"], "gpu"),
    (["max", "batch", "--limit", "0"], "--limit"),
])
def test_max_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_cli_catching_exit(capsys, argv)
    assert code == 2 and out == ""
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1


def run_cli_catching_exit(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- compare --

def test_compare_gpus_table_has_one_row_per_gpu_with_max_batch_and_seq(capsys):
    code, out, err = run_cli(capsys, "compare", "--gpus", "t4,a10g,a100-40g", "--model", "13b")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "max batch" in lines[1] and "max seq" in lines[1]
    model, run = get_model("13b"), make_run()
    for key in ("t4", "a10g", "a100-40g"):
        row = next(line for line in lines if line.startswith(key + " "))
        gpu = get_gpu(key)
        assert str(solvers.max_micro_batch(model, gpu, run)) in row.split()
        seq = solvers.max_seq_len(model, gpu, run)
        beyond_context = "*" if seq > model.max_position_embeddings else ""
        assert f"{seq}{beyond_context}" in row.split()
        assert ("FITS" if plan(model, gpu, run).fits else "DOES NOT FIT") in row
    assert "context window" in out  # 13b's 4096-token context is below what these GPUs allow


def test_compare_models_json_and_csv_agree_with_plan(capsys):
    code, out, _ = run_cli(capsys, "compare", "--models", "7b,13b,70b", "--gpu", "a100-80g", "--json")
    data = json.loads(out)
    assert code == 0 and data["compare"] == "model"
    assert [row["name"] for row in data["rows"]] == ["llama-2-7b", "llama-2-13b", "llama-2-70b"]
    for row in data["rows"]:
        expected = estimate(model=row["name"], gpu="a100-80g")
        assert row["required_bytes"] == expected.required_bytes and row["headroom_bytes"] == expected.headroom_bytes
    code, out, _ = run_cli(capsys, "compare", "--models", "7b,13b,70b", "--gpu", "a100-80g", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["model"] for r in rows] == ["llama-2-7b", "llama-2-13b", "llama-2-70b"]
    assert [int(r["max_seq_len"]) for r in rows] == [r["max_seq_len"] for r in data["rows"]]


def test_compare_marks_a_gpu_that_cannot_run_the_config(capsys):
    code, out, _ = run_cli(capsys, "compare", "--gpus", "t4,a10g", "--compute-dtype", "bf16")
    assert code == 0
    assert "n/a" in out and "note: t4:" in out and "bf16" in out


@pytest.mark.parametrize("argv, needle", [
    (["compare"], "--gpus/--models"),
    (["compare", "--gpus", "t4", "--models", "7b"], "--gpus/--models"),
    (["compare", "--gpus", "t4,gtx9999"], "gpu"),
    (["compare", "--models", "7b,llama-9000"], "model"),
    (["compare", "--gpus", ","], "--gpus"),
    (["compare", "--gpus", "t4", "--json", "--csv"], "not allowed"),
])
def test_compare_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_cli_catching_exit(capsys, argv)
    assert code == 2 and out == "" and err.startswith("error:") and needle in err
    assert len(err.strip().splitlines()) == 1


# -- sweep --

SWEEP = ["sweep", "-m", "8b", "-g", "a10g", "--batch", "1,2,4,8", "--seq", "512,1024,2048", "--rank", "8,16",
         "--method", "qlora,lora"]


def test_sweep_table_lists_every_configuration(capsys):
    code, out, err = run_cli(capsys, *SWEEP)
    assert code == 0 and err == ""
    assert "48 of 48 configurations" in out
    header = out.splitlines()[1].split()
    assert header[:4] == ["method", "batch", "seq", "rank"] and header[-1] == "fits"
    assert len(out.splitlines()) == 2 + 48


def test_sweep_csv_and_json_have_the_same_rows_as_plan(capsys):
    code, out, _ = run_cli(capsys, *SWEEP, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 48
    code, out, _ = run_cli(capsys, *SWEEP, "--json")
    data = json.loads(out)
    assert len(data["rows"]) == 48
    for csv_row, json_row in zip(rows, data["rows"]):
        assert int(csv_row["required_bytes"]) == json_row["required_bytes"]
        assert (csv_row["fits"] == "True") == json_row["fits"]
    sample = data["rows"][17]
    expected = estimate(model="8b", gpu="a10g", method=sample["method"], micro_batch_size=sample["micro_batch_size"],
                        seq_len=sample["seq_len"], lora_rank=sample["lora_rank"])
    assert sample["peak_allocated_bytes"] == expected.peak_allocated_bytes


def test_sweep_fits_only_keeps_fitting_rows(capsys):
    code, out, _ = run_cli(capsys, "sweep", "-m", "13b", "-g", "t4", "--batch", "1,4,16", "--seq", "512,4096",
                           "--fits-only", "--json")
    rows = json.loads(out)["rows"]
    assert code == 0 and rows and all(row["fits"] for row in rows) and len(rows) < 6


@pytest.mark.parametrize("argv, needle", [
    (["sweep", "--batch", "0,x"], "--batch"),
    (["sweep", "--seq", "512,,1024"], "--seq"),
    (["sweep", "--rank", "8.5"], "--rank"),
    (["sweep", "--method", "qlora,foo"], "--method"),
    (["sweep", "--method", "qlora,lora", "--format", "nf4"], "--format"),
    (["sweep", "--model", "llama-9000"], "model"),
])
def test_sweep_bad_grid_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_cli_catching_exit(capsys, argv)
    assert code == 2 and out == "" and err.startswith("error:") and needle in err
    assert len(err.strip().splitlines()) == 1


# -- explain --

def test_explain_shows_terms_with_numbers_for_every_component(capsys):
    code, out, err = run_cli(capsys, "explain", "--model", "13b", "--gpu", "t4")
    expected = estimate(model="13b", gpu="t4")
    assert code == 0 and err == ""
    assert "q_proj.weight: tensors x codes per weight tensor (nf4)" in out
    assert f"quantized weights (packed codes) = {expected.quantized_weights / 2**30:.2f} GiB" in out
    assert "q_proj.lora_A: tensors x elements x bytes per element" in out
    assert "20,480 B/token x 1 b x 512 s x 40 layers = 419,430,400 B" in out
    assert out.count(" GiB (") == sum(1 for value in expected.components().values() if value)


def test_explain_json_components_sum_to_required(capsys):
    code, out, _ = run_cli(capsys, "explain", "-m", "8b", "-g", "a10g", "--method", "inference", "--batch", "4",
                           "--json")
    data = json.loads(out)
    assert code == 0
    assert sum(row["bytes"] for row in data["components"]) == data["required_bytes"]
    kv = next(row for row in data["components"] if row["component"] == "kv_cache")
    assert kv["terms"][0]["formula"] == "2 x layers x b x tokens x kv_dim x dtype"
    assert dict(kv["terms"][0]["factors"])["kv_dim"] == 8 * 128
    assert all(row["terms"] and sum(t["bytes"] for t in row["terms"]) == row["bytes"] for row in data["components"])


def test_explain_unknown_gpu_is_exit_2(capsys):
    code, out, err = run_cli(capsys, "explain", "--gpu", "gtx9999")
    assert code == 2 and out == "" and err.startswith("error: gpu")


# -- fit: advice and --emit hf --

def test_fit_that_does_not_fit_lists_replanned_advice(capsys):
    code, out, _ = run_cli(capsys, "fit", "--model", "13b", "--gpu", "t4", "--batch", "8", "--seq", "2048")
    assert code == 1
    assert "to make it fit:" in out and "[--batch" in out and "FITS" in out.split("to make it fit:")[1]


def test_fit_that_fits_shows_room_to_spare(capsys):
    code, out, _ = run_cli(capsys, "fit", "--model", "13b", "--gpu", "a100")
    max_batch = solvers.max_micro_batch(get_model("13b"), get_gpu("a100"), make_run())
    assert code == 0 and "room to spare:" in out and f"micro-batch up to {max_batch} fits" in out


HF_CASES = [
    ["--model", "13b", "--gpu", "t4"],
    ["--model", "8b", "--gpu", "a100", "--method", "lora", "--optimizer", "paged_adamw_8bit", "--batch", "4",
     "--accum", "8", "--targets", "q_proj,v_proj", "--attention", "flash_attention_2"],
    ["--model", "7b", "--gpu", "a100", "--method", "full", "--optimizer", "adafactor", "--no-gradient-checkpointing"],
    ["--model", "7b", "--gpu", "t4", "--format", "int8", "--optimizer", "adamw_8bit", "--loss-impl", "chunked"],
    ["--model", "7b", "--gpu", "a10g", "--method", "inference"],
]


@pytest.mark.parametrize("flags", HF_CASES)
def test_emit_hf_snippet_compiles_and_matches_the_plan(capsys, flags):
    from vramplan.optimizers import get_optimizer

    code, out, _ = run_cli(capsys, "fit", *flags, "--emit", "hf")
    compile(out, "<emit-hf>", "exec")
    run = make_run(**{k: v for k, v in parse_flags(flags).items()})
    expected = plan(get_model(flags[1]), get_gpu(flags[3]), run)
    assert code == (0 if expected.fits else 1)
    assert f"max_seq_length = {run.seq_len}" in out
    if run.trains:
        assert f"per_device_train_batch_size={run.micro_batch_size}," in out
        assert f"gradient_accumulation_steps={run.grad_accum_steps}," in out
        assert f'optim="{get_optimizer(run.optimizer).hf_optim}",' in out
        assert f"activation_checkpointing={run.gradient_checkpointing}," in out
        assert f"{expected.compute_dtype}=True," in out or expected.compute_dtype == "fp32"
    if run.uses_lora:
        assert f"r={run.lora_rank}," in out
    if expected.weight_format == "nf4":
        assert 'bnb_4bit_quant_type="nf4"' in out and "bnb_4bit_use_double_quant=True" in out
    assert f'attn_implementation="{run.attention}"' in out


def parse_flags(flags):
    names = {"--method": "method", "--optimizer": "optimizer", "--batch": "micro_batch_size",
             "--accum": "grad_accum_steps", "--targets": "lora_targets", "--attention": "attention",
             "--format": "weight_format", "--loss-impl": "loss_impl"}
    fields, items = {}, list(flags)
    for index, item in enumerate(items):
        if item in names:
            value = items[index + 1]
            fields[names[item]] = int(value) if value.isdigit() else value
        if item == "--no-gradient-checkpointing":
            fields["gradient_checkpointing"] = False
    return fields


@pytest.mark.slow
def test_emit_hf_config_part_builds_the_transformers_and_peft_objects():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from transformers.training_args import OptimizerNames

    from vramplan.emit_hf import hf_snippet
    from vramplan.optimizers import all_optimizers

    assert {entry.hf_optim for entry in all_optimizers()} <= {name.value for name in OptimizerNames}
    model, gpu = get_model("13b"), get_gpu("t4")  # fp16: TrainingArguments accepts it without a GPU
    run = make_run(micro_batch_size=2, grad_accum_steps=4, optimizer="paged_adamw_8bit", lora_rank=32)
    snippet = hf_snippet(model, gpu, run, plan(model, gpu, run), include_model_load=False)
    namespace = {}
    exec(compile(snippet, "<emit-hf>", "exec"), namespace)
    bnb, lora, args = namespace["bnb_config"], namespace["lora_config"], namespace["training_args"]
    assert isinstance(bnb, transformers.BitsAndBytesConfig) and bnb.load_in_4bit
    assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert lora.r == 32 and lora.lora_alpha == 64
    assert args.per_device_train_batch_size == 2 and args.gradient_accumulation_steps == 4
    assert args.optim == OptimizerNames.PAGED_ADAMW_8BIT and args.fp16 and args.activation_checkpointing


# -- help and one real process --

@pytest.mark.parametrize("command", ["max", "compare", "sweep", "explain", "fit"])
def test_every_command_help_has_examples_and_json(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--json" in text and f"vramplan {command}" in text


def test_console_script_max_batch_in_a_real_process():
    done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "max", "batch", "-m", "13b", "-g", "t4", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["value"] == solvers.max_micro_batch(get_model("13b"), get_gpu("t4"), make_run())


def test_max_seq_says_when_memory_allows_more_than_the_context_window(capsys):
    code, out, _ = run_cli(capsys, "max", "seq", "--model", "7b", "--gpu", "a100-80g")
    value = solvers.max_seq_len(get_model("7b"), get_gpu("a100-80g"), make_run())
    assert code == 0 and value > 4096
    assert f"memory allows {value} tokens, but llama-2-7b's context window is 4096" in out


def test_the_command_table_names_every_command_each_module_registers_in_help_order():
    import argparse

    from vramplan.cli.main import COMMANDS, build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == list(COMMANDS)
    for command in COMMANDS:  # a command's own parser alone parses its line as the whole CLI does
        alone = next(a for a in build_parser(command)._actions if isinstance(a, argparse._SubParsersAction))
        assert list(alone.choices) == [name for name, module in COMMANDS.items() if module == COMMANDS[command]]
    line = ["serve", "--engine", "llama.cpp", "--model", "7b", "--gpu", "4090", "-ngl", "10"]
    assert vars(build_parser("serve").parse_args(line)).keys() == vars(build_parser().parse_args(line)).keys()
