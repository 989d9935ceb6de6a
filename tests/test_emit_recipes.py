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


def torchtune_files():
    """torchtune 0.6.1's installed files (its bundled recipe configs and model builders), read as
    files: torchtune 0.6.1 does not import beside torchao 0.18 (torchao.dtypes.nf4tensor moved)."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution("torchtune")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torchtune is not installed (pip install torchtune==0.6.1 beside torch 2.13)")
    if distribution.version != "0.6.1":
        pytest.skip(f"the emitter targets torchtune 0.6.1, {distribution.version} is installed")
    return distribution.locate_file("")


def builder_parameters(root, component: str) -> set[str]:
    """Keyword names of a torchtune builder, read from _model_builders.py (a `qlora_*` is a partial of `lora_*`)."""
    import ast

    _, _, family, name = component.split(".")
    tree = ast.parse((root / f"torchtune/models/{family}/_model_builders.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    partials = {node.targets[0].id: node.value.args[0].id for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "partial"}
    function = functions[partials.get(name, name)]
    return {arg.arg for arg in function.args.args + function.args.kwonlyargs}


TORCHTUNE_CASES = [
    dict(recipe="torchtune"),
    dict(),
    dict(method="lora", lora_targets=("q_proj", "v_proj"), optimizer="adamw_8bit", gradient_checkpointing=False),
    dict(method="lora", model="gemma-2-2b", optimizer="adamw_fused", loss_impl="chunked", micro_batch_size=4),
    dict(method="full", model="qwen2.5-0.5b", full_precision="pure", optimizer="sgd_momentum"),
]


@pytest.mark.parametrize("fields", TORCHTUNE_CASES, ids=["recipe", "qlora", "lora-8bit", "gemma2-fused", "full-sgd"])
def test_torchtune_overrides_merge_onto_its_bundled_config_and_carry_the_plan(fields):
    from vramplan.emit_torchtune import overrides_from_command, torchtune_command

    omegaconf = pytest.importorskip("omegaconf")
    root = torchtune_files()
    command, run, breakdown = emitted(torchtune_command, **fields)
    config_name, overrides = overrides_from_command(command)
    base = omegaconf.OmegaConf.load(root / f"recipes/configs/{config_name}.yaml")
    for override in overrides:  # as torchtune/config/_utils.py _merge_yaml_and_cli_args does
        key = override.lstrip("~").split("=")[0]
        parent, _, leaf = key.rpartition(".")
        node = omegaconf.OmegaConf.select(base, parent) if parent else base
        if override.startswith("~"):
            assert leaf in node, f"{key} is not in {config_name}"
            del node[leaf]
        elif parent not in ("optimizer", "loss", "tokenizer"):  # component arguments are checked below
            assert leaf in node, f"{key} is not in {config_name}"
    merged = omegaconf.OmegaConf.merge(base, omegaconf.OmegaConf.from_dotlist(
        [override for override in overrides if not override.startswith("~")]))
    for component in ("model", "tokenizer"):
        assert set(merged[component]) - {"_component_"} <= builder_parameters(root, merged[component]._component_)
    assert (merged.batch_size, merged.gradient_accumulation_steps, merged.tokenizer.max_seq_len) \
        == (run.micro_batch_size, run.grad_accum_steps, run.seq_len)
    assert merged.enable_activation_checkpointing is run.gradient_checkpointing and merged.dataset.packed is False
    assert merged.dtype == breakdown.compute_dtype
    component, kwargs = merged.optimizer._component_, dict(merged.optimizer)
    assert component == __import__("vramplan.optimizers").optimizers.get_optimizer(run.optimizer).library_class
    if component.startswith("torch."):
        import inspect

        torch = pytest.importorskip("torch")
        accepted = inspect.signature(getattr(torch.optim, component.rsplit(".", 1)[1])).parameters
        assert set(kwargs) - {"_component_"} <= set(accepted)
    if run.uses_lora:
        assert (merged.model.lora_rank, merged.model.lora_alpha, merged.model.lora_dropout) \
            == (run.lora_rank, run.resolved_lora_alpha, run.lora_dropout)
        every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        targets = every if run.lora_targets == ("all-linear",) else run.lora_targets
        names = {"o_proj": "output_proj"}
        assert list(merged.model.lora_attn_modules) == [names.get(t, t) for t in targets if t in every[:4]]
        assert merged.model.apply_lora_to_mlp is ("gate_proj" in targets)
    assert merged.model._component_.rsplit(".", 1)[1].startswith({"qlora": "qlora_", "lora": "lora_", "full": ""}[run.method])
    chunked = merged.loss._component_ == "torchtune.modules.loss.CEWithChunkedOutputLoss"
    assert chunked is (run.loss_impl == "chunked")


def test_torchtune_model_table_names_builders_and_configs_that_exist():
    from vramplan.emit_torchtune import torchtune_models

    yaml = pytest.importorskip("yaml")
    root = torchtune_files()
    for name, entry in torchtune_models().items():
        get_model(name)
        for method, config in entry["configs"].items():
            base = yaml.safe_load((root / f"recipes/configs/{config['config']}.yaml").read_text())
            assert sorted(base["optimizer"]) == config["optimizer_keys"]
            assert builder_parameters(root, entry["builders"][method]) is not None


@pytest.mark.parametrize("fields, message", [
    (dict(weight_format="gptq-4bit"), "torchtune trains qlora on nf4"),
    (dict(gpu="t4"), "bf16 or fp32, not fp16"),
    (dict(model="qwen2.5-7b"), "no single-device qlora config for qwen2.5-7b"),
    (dict(method="lora", lora_targets=("q_proj", "up_proj")), "all of gate_proj, up_proj, down_proj or none"),
])
def test_torchtune_bad_combos_are_one_line_input_errors(fields, message):
    from vramplan.emit_torchtune import torchtune_command

    with pytest.raises(InputError, match=message):
        emitted(torchtune_command, **fields)


def test_torchtune_says_what_it_cannot_express():
    from vramplan.emit_torchtune import torchtune_command

    command, _, _ = emitted(torchtune_command, checkpointing_variant="reentrant", lora_dtype="fp32", kbit_prep=True)
    assert "checkpoints non-reentrant" in command and "keeps LoRA weights in dtype=bf16" in command
    assert "upcasts nothing to fp32" in command


def axolotl_keys() -> set[str]:
    import json
    from pathlib import Path

    committed = json.loads(Path("vramplan/emit_fields/axolotl.json").read_text())
    return {name for names in committed["fields"].values() for name in names}


AXOLOTL_CASES = [
    dict(),
    dict(weight_format="fp4", double_quant=False, loss_impl="chunked", kbit_prep="norms"),
    dict(method="qlora", weight_format="int8", lora_targets=("q_proj", "v_proj"), lora_dtype="bf16"),
    dict(method="full", optimizer="sgd_momentum", gradient_checkpointing=False, checkpointing_variant="reentrant"),
    dict(method="lora", checkpointing_variant="reentrant", micro_batch_size=4, grad_accum_steps=8, seq_len=2048),
]


@pytest.mark.parametrize("fields", AXOLOTL_CASES, ids=["qlora", "fp4-no-dq-chunked", "int8", "full-sgd", "lora-reentrant"])
def test_axolotl_yaml_loads_names_only_its_fields_and_carries_the_plan(fields):
    from vramplan.emit_axolotl import axolotl_yaml

    yaml = pytest.importorskip("yaml")
    text, run, breakdown = emitted(axolotl_yaml, **fields)
    config = yaml.safe_load(text)
    assert set(config) - axolotl_keys() == set()
    assert all(set(dataset) <= axolotl_keys() for dataset in config["datasets"])
    assert (config["sequence_len"], config["micro_batch_size"], config["gradient_accumulation_steps"]) \
        == (run.seq_len, run.micro_batch_size, run.grad_accum_steps)
    assert config["sample_packing"] is False and config["attn_implementation"] == "sdpa"
    assert config["gradient_checkpointing"] is run.gradient_checkpointing
    if run.gradient_checkpointing:
        assert config["gradient_checkpointing_kwargs"] == {"use_reentrant": run.checkpointing_variant == "reentrant"}
    from vramplan.optimizers import get_optimizer

    entry = get_optimizer(run.optimizer)
    assert config["optimizer"] == entry.hf_optim and config.get("optim_args") == entry.hf_optim_args
    assert config["bf16"] is True and config["fp16"] is False
    assert config.get("chunked_cross_entropy", False) is (run.loss_impl == "chunked")
    if run.uses_lora:
        assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) \
            == (run.lora_rank, run.resolved_lora_alpha, run.lora_dropout)
        if run.lora_targets == ("all-linear",):
            assert config["lora_target_linear"] is True
        else:
            assert config["lora_target_modules"] == list(run.lora_targets)
        assert config["peft_autocast_adapter_dtype"] is (run.lora_dtype == "fp32")
    else:
        assert "adapter" not in config
    if breakdown.weight_format in ("nf4", "fp4"):
        assert config["adapter"] == "qlora" and config["load_in_4bit"] is True
        transformers = pytest.importorskip("transformers")
        import inspect

        accepted = inspect.signature(transformers.BitsAndBytesConfig).parameters
        kwargs = config.get("bnb_config_kwargs", {})
        assert set(kwargs) <= set(accepted)
        assert kwargs.get("bnb_4bit_quant_type", "nf4") == breakdown.weight_format
        assert kwargs.get("bnb_4bit_use_double_quant", True) is run.double_quant
    if breakdown.weight_format == "int8":
        assert config["adapter"] == "lora" and config["load_in_8bit"] is True


def test_axolotl_says_what_it_cannot_express():
    from vramplan.emit_axolotl import axolotl_yaml

    no_prep, _, _ = emitted(axolotl_yaml, kbit_prep=False)
    mixed_full, _, _ = emitted(axolotl_yaml, method="full", full_precision="mixed")
    assert "always runs prepare_model_for_kbit_training" in no_prep
    assert "no fp32 master weights" in mixed_full


@pytest.mark.parametrize("target", ["llama-factory", "torchtune", "axolotl"])
def test_cli_emit_targets_print_and_refuse_inference_with_exit_2(target):
    command = [sys.executable, "-m", "vramplan.cli.main", "fit", "--model", "llama-3.1-8b", "--gpu", "a10g",
               "--emit", target]
    good = subprocess.run(command, capture_output=True, text=True)
    assert good.returncode == 0 and good.stdout.startswith("# vramplan plan: llama-3.1-8b")
    bad = subprocess.run(command + ["--method", "inference"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qlora", "lora", "full"])
def test_trl_script_trains_a_step_on_a_tiny_local_checkpoint(method, tmp_path):
    """The whole --emit trl script runs on CPU (the model id rewritten to a tiny local Llama, a
    word-level tokenizer and two pre-tokenized samples supplied), and on a 4-bit model SFTTrainer
    really leaves the LoRA weights in bf16, as the script's comment says."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    from vramplan.resolve import resolve_model

    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, vocab_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-llama"
    transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**tiny)).save_pretrained(folder)
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0"))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=words, pad_token="t0", eos_token="t1")
    model = resolve_model(str(folder))
    gpu, run = get_gpu("a100"), make_run(method=method, seq_len=16)
    snippet = trl_snippet(model, gpu, run, plan(model, gpu, run))
    snippet = snippet.replace('output_dir="out"', f'output_dir="{tmp_path / "out"}"')
    snippet = snippet.replace('report_to="none",', 'report_to="none", use_cpu=True, max_steps=1, save_strategy="no", '
                              'logging_strategy="no", disable_tqdm=True,')
    snippet = snippet.replace("train_dataset=train_dataset)", "train_dataset=train_dataset, processing_class=tokenizer)")
    samples = datasets.Dataset.from_dict({"input_ids": torch.randint(2, 64, (2, 16)).tolist()})
    namespace = {"train_dataset": samples, "tokenizer": tokenizer}
    exec(compile(snippet, "<emit-trl>", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 1
    trainable = {param.dtype for param in namespace["model"].parameters() if param.requires_grad}
    if method == "qlora":
        assert trainable == {torch.bfloat16}
    if method != "full":
        assert type(namespace["model"]).__name__.startswith("PeftModel")


def test_every_registered_optimizer_has_a_name_in_every_framework():
    from vramplan.emit_common import HF_TRAINER_FRAMEWORKS, framework_optimizers
    from vramplan.optimizers import get_optimizer, optimizer_names

    table = framework_optimizers()
    assert set(table) == set(optimizer_names())
    for name, by_framework in table.items():
        entry = get_optimizer(name)
        assert set(by_framework) == set(HF_TRAINER_FRAMEWORKS) | {"torchtune"}
        assert by_framework["torchtune"] == (entry.library_class, dict(entry.class_kwargs))
        assert all(by_framework[framework][0] == entry.hf_optim for framework in HF_TRAINER_FRAMEWORKS)


def test_yaml_scalars_round_trip_through_a_yaml_parser():
    from vramplan.emit_common import yaml_lines

    yaml = pytest.importorskip("yaml")
    entries = [("flag", True), ("none_word", "none"), ("yes_word", "yes"), ("path", "./out"), ("rate", 0.05),
               ("names", ["q_proj", "v_proj"]), ("nested", {"use_reentrant": False}),
               ("items", [{"path": "a/b", "type": "alpaca"}]), ("colon", "a: b")]
    loaded = yaml.safe_load("\n".join(yaml_lines(entries)))
    assert loaded == {key: value for key, value, *_ in entries}
