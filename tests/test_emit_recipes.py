"""`fit --emit trl|llama-factory|torchtune|axolotl`: each recipe is built with the real library where
it installs beside our pins (trl; torchtune's bundled recipe configs), else checked against the
field names read from the framework's source (vramplan/emit_fields/*.json), and carries the
plan's values."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from vramplan.catalog import get_model
from vramplan.emit_hf import LOAD_MARKER
from vramplan.emit_trl import trl_snippet
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu


def emitted(emitter, model="llama-3.1-8b", gpu="a10g", **fields):
    model, gpu, run = get_model(model), get_gpu(gpu), make_run(**fields)
    breakdown = plan(model, gpu, run)
    return emitter(model, gpu, run, breakdown), run, breakdown


TRL_CASES = [
    dict(),
    dict(method="lora", gradient_checkpointing=False, lora_targets=("q_proj", "v_proj")),
    dict(method="full", optimizer="sgd_momentum", full_precision="mixed"),
    dict(checkpointing_variant="reentrant", optimizer="paged_adamw_8bit", micro_batch_size=4, grad_accum_steps=8,
         seq_len=2048),
]


@pytest.mark.parametrize("fields", TRL_CASES, ids=["qlora", "lora-no-ckpt", "full-sgd", "reentrant-paged"])
def test_trl_sftconfig_builds_with_real_trl_and_carries_the_plan(fields, tmp_path):
    pytest.importorskip("trl")
    snippet, run, breakdown = emitted(trl_snippet, **fields)
    compile(snippet, "<emit-trl>", "exec")  # the whole script parses
    configs = snippet.split(LOAD_MARKER)[0].replace('output_dir="out"', f'output_dir="{tmp_path}"')
    configs = configs.replace('report_to="none",', 'report_to="none", use_cpu=True,')  # this machine has no GPU
    namespace = {}
    exec(compile(configs, "<emit-trl-configs>", "exec"), namespace)
    config = namespace["sft_config"]
    assert type(config).__name__ == "SFTConfig"
    assert (config.max_length, config.per_device_train_batch_size, config.gradient_accumulation_steps) \
        == (run.seq_len, run.micro_batch_size, run.grad_accum_steps)
    assert config.packing is False and config.padding_free is False and config.loss_type == "nll"
    assert config.activation_checkpointing is run.gradient_checkpointing
    if run.gradient_checkpointing:
        assert config.activation_checkpointing_kwargs == {"use_reentrant": run.checkpointing_variant == "reentrant"}
    from vramplan.optimizers import get_optimizer

    entry = get_optimizer(run.optimizer)
    assert config.optim == entry.hf_optim and config.optim_args == entry.hf_optim_args
    assert 'bf16=True' in snippet  # a10g: bf16 autocast as planned
    if run.uses_lora:
        lora = namespace["lora_config"]
        assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (run.lora_rank, run.resolved_lora_alpha, run.lora_dropout)
    if run.method == "qlora":
        bnb = namespace["bnb_config"]
        assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant is True
        assert "casts the trainable LoRA weights of a 4/8-bit model to bf16" in snippet


def test_trl_script_prepares_the_kbit_model_itself_since_sfttrainer_does_not():
    snippet, _, _ = emitted(trl_snippet, method="qlora", kbit_prep=True)
    assert "prepare_model_for_kbit_training(model" in snippet and "get_peft_model(model, lora_config)" in snippet
    assert "SFTTrainer(model=model" in snippet and "peft_config" not in snippet


def test_trl_says_when_the_plan_counted_the_whole_logits_and_not_when_it_counted_chunks():
    standard, _, _ = emitted(trl_snippet, loss_impl="standard")
    chunked, _, _ = emitted(trl_snippet, loss_impl="chunked")
    assert "upper bound" in standard and "upper bound" not in chunked


def test_trl_fp16_gpu_gets_fp16_autocast():
    snippet, _, _ = emitted(trl_snippet, gpu="t4")
    assert "bf16=False," in snippet and "fp16=True," in snippet
    assert "bnb_4bit_compute_dtype=torch.float16" in snippet


def test_recipes_for_inference_are_a_one_line_input_error():
    with pytest.raises(InputError, match="--method inference"):
        emitted(trl_snippet, method="inference")


def test_cli_emit_trl_prints_the_script_and_a_bad_combo_exits_2():
    command = [sys.executable, "-m", "vramplan.cli.main", "fit", "--model", "llama-3.1-8b", "--gpu", "a10g"]
    good = subprocess.run(command + ["--emit", "trl"], capture_output=True, text=True)
    assert good.returncode == 0 and "sft_config = SFTConfig(" in good.stdout
    bad = subprocess.run(command + ["--emit", "trl", "--method", "inference"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.startswith("error: --emit:")


def llama_factory_keys() -> set[str]:
    """LLaMA-Factory's own hparams fields (read from its source) plus the transformers
    Seq2SeqTrainingArguments fields its TrainingArguments inherits (from the installed transformers)."""
    import json
    from pathlib import Path

    transformers = pytest.importorskip("transformers")
    committed = json.loads(Path("vramplan/emit_fields/llama_factory.json").read_text())
    own = {name for names in committed["fields"].values() for name in names}
    return own | {field.name for field in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}


LF_CASES = [
    dict(),
    dict(method="lora", gradient_checkpointing=False, lora_targets=("q_proj", "v_proj"), optimizer="sgd_momentum"),
    dict(method="full", full_precision="pure"),
    dict(kbit_prep="norms", weight_format="int8", loss_impl="chunked", checkpointing_variant="reentrant",
         micro_batch_size=4, grad_accum_steps=8, seq_len=2048),
]


@pytest.mark.parametrize("fields", LF_CASES, ids=["qlora", "lora-sgd-no-ckpt", "full-pure", "int8-norms-chunked"])
def test_llama_factory_yaml_loads_names_only_its_fields_and_carries_the_plan(fields):
    from vramplan.emit_llama_factory import llama_factory_yaml

    yaml = pytest.importorskip("yaml")
    text, run, breakdown = emitted(llama_factory_yaml, **fields)
    config = yaml.safe_load(text)
    assert set(config) - llama_factory_keys() == set()
    assert (config["cutoff_len"], config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) \
        == (run.seq_len, run.micro_batch_size, run.grad_accum_steps)
    assert config["packing"] is False and config["stage"] == "sft" and config["flash_attn"] == "sdpa"
    assert config["disable_gradient_checkpointing"] is (not run.gradient_checkpointing)
    if run.gradient_checkpointing:
        assert config["use_reentrant_gc"] is (run.checkpointing_variant == "reentrant")
    from vramplan.optimizers import get_optimizer

    entry = get_optimizer(run.optimizer)
    assert config["optim"] == entry.hf_optim and config.get("optim_args") == entry.hf_optim_args
    assert config["enable_liger_kernel"] is (run.loss_impl == "chunked")
    if run.uses_lora:
        assert config["finetuning_type"] == "lora"
        assert (config["lora_rank"], config["lora_alpha"], config["lora_dropout"]) \
            == (run.lora_rank, run.resolved_lora_alpha, run.lora_dropout)
        assert config["lora_target"] == ("all" if run.lora_targets == ("all-linear",) else ",".join(run.lora_targets))
    if run.method == "qlora":
        assert config["quantization_method"] == "bnb"
        assert config["quantization_bit"] == (8 if breakdown.weight_format == "int8" else 4)
        assert config["upcast_layernorm"] is (run.kbit_prep in (True, "norms"))
    if breakdown.weight_format == "nf4":
        assert config["quantization_type"] == "nf4" and config["double_quantization"] is True
    if run.method == "full" and run.full_precision == "pure":
        assert config["pure_bf16"] is True and "bf16" not in config
    else:
        assert config["bf16"] is True and config["fp16"] is False


def test_llama_factory_maps_gemma2_to_eager_and_says_what_it_cannot_express():
    from vramplan.emit_llama_factory import llama_factory_yaml

    text, _, _ = emitted(llama_factory_yaml, model="gemma-2-2b", method="qlora", kbit_prep=True)
    assert "flash_attn: disabled" in text and "never calls it" in text


def test_llama_factory_says_which_checkpoint_a_gptq_plan_on_a_float_repo_needs():
    from vramplan.emit_llama_factory import llama_factory_yaml

    yaml = pytest.importorskip("yaml")
    text, _, _ = emitted(llama_factory_yaml, method="qlora", weight_format="gptq-4bit")
    assert "at a gptq-4bit checkpoint" in text and "quantization_bit" not in yaml.safe_load(text)
