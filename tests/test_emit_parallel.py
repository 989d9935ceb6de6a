"""`fit --emit accelerate|deepspeed`: the accelerate config loads through accelerate's own ClusterConfig,
names only keys accelerate 1.16 reads, and launches (through accelerate's own launcher code) the
FSDP/DeepSpeed settings the plan assumed; the DeepSpeed JSON parses with DeepSpeed's own config
classes and transformers' Trainer accepts it for the planned TrainingArguments."""
from __future__ import annotations

from vramplan.specs.parallel import resolved_overlap_comm

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vramplan.catalog import get_model
from vramplan.emit_accelerate import (DEEPSPEED_CONFIG_FILE, accelerate_config, decoder_layer_class,
                                      launch_environment, torchrun_arguments)
from vramplan.emit_deepspeed import deepspeed_config, deepspeed_json
from vramplan.emit_parallel import emit_parallel
from vramplan.errors import InputError
from vramplan.estimate import make_parallel, make_run, plan
from vramplan.families import families
from vramplan.gpus import get_gpu
from vramplan.specs.parallel import FSDP_STRATEGIES, ZERO_STRATEGIES, ParallelConfig, auto_bucket_sizes

FIELDS = Path("vramplan/emit_fields")
ACCELERATE_SECTIONS = ("fsdp_config", "deepspeed_config", "parallelism_config")


def installed_accelerate_fields() -> dict:
    """What accelerate reads from a config file, read from the installed accelerate."""
    accelerate = pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    groups = {group.title: sorted({action.dest for action in group._group_actions})
              for group in launch_command_parser()._action_groups}
    return {"source": "pypi:accelerate", "version": accelerate.__version__,
            "note": "top_level: the ClusterConfig dataclass fields (commands/config/config_args.py; from_yaml_file "
                    "refuses any other key); fsdp_config / deepspeed_config / parallelism_config: the `accelerate "
                    "launch` arguments of its FSDP / DeepSpeed / ParallelismConfig groups (commands/launch.py "
                    "_validate_launch_command copies each section key onto the argument of that name; a key that "
                    "is no argument is set and never read)",
            "fields": {"top_level": sorted(ClusterConfig.__dataclass_fields__),
                       "fsdp_config": groups["FSDP Arguments"], "deepspeed_config": groups["DeepSpeed Arguments"],
                       "parallelism_config": groups["ParallelismConfig Arguments"]}}


def _model_keys(model_class) -> list[str]:
    """A DeepSpeed pydantic config's accepted keys: field names and their aliases."""
    names = set(model_class.model_fields)
    names |= {info.alias for info in model_class.model_fields.values() if info.alias}
    return sorted(names)


DEEPSPEED_TOP_LEVEL = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping", "bf16",
                       "fp16", "optimizer", "zero_force_ds_cpu_optimizer", "tensor_parallel", "zero_optimization")


def installed_deepspeed_fields() -> dict:
    """The keys DeepSpeed accepts in the sections vramplan writes, read from the installed deepspeed."""
    deepspeed = pytest.importorskip("deepspeed")
    from deepspeed.runtime import constants
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.tensor_parallel import config as tensor_parallel_config
    from deepspeed.runtime.zero import config as zero_config
    from deepspeed.runtime.zero.offload_config import (DeepSpeedZeroOffloadOptimizerConfig,
                                                       DeepSpeedZeroOffloadParamConfig)

    known = {value for value in vars(constants).values() if isinstance(value, str)} | {zero_config.ZERO_OPTIMIZATION}
    if "'tensor_parallel' in ds_config" in inspect.getsource(tensor_parallel_config.get_tensor_parallel_config):
        known.add("tensor_parallel")
    return {"source": "pypi:deepspeed", "version": deepspeed.__version__,
            "note": "top_level: the keys vramplan writes, each a key name of runtime/constants.py or "
                    "runtime/zero/config.py (DeepSpeedConfig reads top-level keys by name and ignores others, "
                    "refusing only _REMOVED_TOP_LEVEL_CONFIG_KEYS); the sections: field names and aliases of "
                    "their pydantic models, which forbid any other key (runtime/config_utils.py extra='forbid')",
            "fields": {"top_level": [key for key in DEEPSPEED_TOP_LEVEL if key in known],
                       "zero_optimization": _model_keys(zero_config.DeepSpeedZeroConfig),
                       "offload_optimizer": _model_keys(DeepSpeedZeroOffloadOptimizerConfig),
                       "offload_param": _model_keys(DeepSpeedZeroOffloadParamConfig),
                       "bf16": _model_keys(DeepSpeedBF16Config), "fp16": _model_keys(DeepSpeedFP16Config),
                       "tensor_parallel": _model_keys(tensor_parallel_config.TPTrainingConfig)}}


@pytest.mark.parametrize("name, installed", [("accelerate", installed_accelerate_fields),
                                             ("deepspeed", installed_deepspeed_fields)])
def test_committed_field_lists_are_what_the_installed_library_reads(name, installed):
    committed = json.loads((FIELDS / f"{name}.json").read_text())
    current = installed()
    if current["version"] != committed["version"]:
        pytest.skip(f"{name} {current['version']} installed, the list is of {committed['version']}")
    assert committed == current


def test_every_top_level_deepspeed_key_written_is_a_deepspeed_key_name():
    assert set(installed_deepspeed_fields()["fields"]["top_level"]) == set(DEEPSPEED_TOP_LEVEL)


def fields_of(name: str) -> dict[str, set[str]]:
    return {section: set(keys) for section, keys in json.loads((FIELDS / f"{name}.json").read_text())["fields"].items()}


def planned(run_fields: dict, parallel_fields: dict, model="llama-3.1-8b", gpu="h100"):
    model, gpu, run = get_model(model), get_gpu(gpu), make_run(**run_fields)
    return model, gpu, run, make_parallel(**parallel_fields), plan(model, gpu, run)


CASES = {
    "single": (dict(method="lora"), dict()),
    "ddp-4": (dict(method="lora", gradient_checkpointing=False), dict(gpus=4, ddp_bucket_cap_mb=100)),
    "ddp-tp": (dict(method="lora"), dict(gpus=4, tensor_parallel=2)),
    "fsdp1-lora": (dict(method="lora"), dict(gpus=4, strategy="fsdp")),
    "fsdp1-grad-op-full": (dict(method="full", full_precision="mixed"),
                           dict(gpus=8, strategy="fsdp-grad-op", backward_prefetch=False, forward_prefetch=True)),
    "fsdp1-hybrid-2-nodes-qlora": (dict(), dict(gpus=8, nodes=2, strategy="fsdp-hybrid", offload="params",
                                                cpu_ram_efficient_loading=False, limit_all_gathers=False)),
    "fsdp2-full": (dict(method="full"), dict(gpus=4, strategy="fsdp", fsdp_version=2,
                                             fsdp_wrap="decoder-layer+lora")),
    "fsdp2-hybrid-tp": (dict(method="lora"), dict(gpus=8, nodes=2, strategy="fsdp-hybrid", fsdp_version=2,
                                                  tensor_parallel=2)),
    "zero1": (dict(method="full", full_precision="mixed"), dict(gpus=2, strategy="zero1")),
    "zero2-offload-sgd": (dict(method="full", optimizer="sgd_momentum"),
                          dict(gpus=4, strategy="zero2", offload="optimizer", reduce_bucket_size=200_000_000)),
    "zero3-offload-optimizer": (dict(method="full"), dict(gpus=8, strategy="zero3", offload="optimizer")),
    "zero3-tp-qlora": (dict(), dict(gpus=4, strategy="zero3", tensor_parallel=2)),
    "zero3-params-nvme-3-nodes": (dict(method="lora", micro_batch_size=2, grad_accum_steps=8),
                                  dict(gpus=8, nodes=3, strategy="zero3", offload="params", offload_device="nvme",
                                       stage3_prefetch_bucket_size=1000, overlap_comm=False)),
}


def case(name: str):
    run_fields, parallel_fields = CASES[name]
    return planned(run_fields, parallel_fields)


def _accelerate_yaml(name: str) -> str:
    model, gpu, run, parallel, breakdown = case(name)
    return accelerate_config(model, gpu, run, parallel, breakdown)


@pytest.mark.parametrize("name", CASES)
def test_accelerate_config_names_only_keys_accelerate_reads_and_carries_the_plan(name):
    yaml = pytest.importorskip("yaml")
    model, gpu, run, parallel, breakdown = case(name)
    config = yaml.safe_load(accelerate_config(model, gpu, run, parallel, breakdown))
    accepted = fields_of("accelerate")
    assert set(config) <= accepted["top_level"]
    for section in ACCELERATE_SECTIONS:
        assert set(config.get(section, {})) <= accepted[section], section
    strategy = parallel.resolved_strategy
    assert (config["num_machines"], config["num_processes"]) == (parallel.nodes, parallel.world_size)
    assert ("main_process_ip" in config) is (parallel.nodes > 1)
    assert config["distributed_type"] == {"single": "NO", "ddp": "MULTI_GPU"}.get(
        strategy, "FSDP" if strategy in FSDP_STRATEGIES else "DEEPSPEED")
    assert ("fsdp_config" in config) is (strategy in FSDP_STRATEGIES)
    assert ("deepspeed_config" in config) is (strategy in ZERO_STRATEGIES)
    assert ("mixed_precision" in config) is (strategy not in ZERO_STRATEGIES)
    if strategy in FSDP_STRATEGIES:
        fsdp = config["fsdp_config"]
        assert fsdp["fsdp_version"] == parallel.fsdp_version
        assert fsdp["fsdp_offload_params"] is (parallel.offload == "params")
        assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
        assert fsdp["fsdp_cpu_ram_efficient_loading"] is parallel.cpu_ram_efficient_loading
        assert fsdp["fsdp_activation_checkpointing"] is False
    if strategy in ZERO_STRATEGIES:
        assert config["deepspeed_config"]["deepspeed_config_file"] == DEEPSPEED_CONFIG_FILE
        assert config["deepspeed_config"]["zero3_init_flag"] is (strategy == "zero3")


@pytest.mark.parametrize("name", CASES)
def test_accelerate_config_round_trips_through_accelerates_cluster_config(name, tmp_path):
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import ClusterConfig

    text = _accelerate_yaml(name)
    path = tmp_path / "accelerate.yaml"
    path.write_text(text)
    loaded = ClusterConfig.from_yaml_file(str(path))
    written = yaml.safe_load(text)
    as_dict = loaded.to_dict()
    assert {key: as_dict[key] for key in written} == written
    again = tmp_path / "again.yaml"
    loaded.to_yaml_file(str(again))
    assert ClusterConfig.from_yaml_file(str(again)).to_dict() == as_dict


def _launched_environment(name: str, tmp_path, monkeypatch) -> tuple[tuple, object, dict]:
    """Case `name`'s plan, and what accelerate launch's own argument handling and environment builder
    make of its config file (no process is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import launch as launch_utils

    planned_case = case(name)
    path = tmp_path / "accelerate.yaml"
    path.write_text(accelerate_config(*planned_case))
    monkeypatch.setattr(launch_utils, "is_port_in_use", lambda port=None: False)
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, mixed_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = launch_utils.prepare_deepspeed_cmd_env(args)
    else:
        env = launch_utils.prepare_multi_gpu_env(args)
    return planned_case, args, env


@pytest.mark.parametrize("name", [name for name in CASES if name != "single"])
def test_torchrun_line_sets_what_accelerate_launch_sets(name, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    (model, gpu, run, parallel, breakdown), args, env = _launched_environment(name, tmp_path, monkeypatch)
    ours = launch_environment(model, run, parallel, breakdown)
    assert {key: env.get(key) for key in ours} == ours
    settings = ("FSDP_", "ACCELERATE_USE_", "ACCELERATE_DEEPSPEED_", "ACCELERATE_MIXED_PRECISION")
    beyond_ours = {key for key in env
                   if key.startswith(settings) and key not in ours and env[key] not in ("", "None")}
    # the launcher's own defaults for settings this FSDP version does not read or the plan leaves alone
    assert beyond_ours <= {"FSDP_MIN_NUM_PARAMS", "FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD",
                           "FSDP_RESHARD_AFTER_FORWARD", "FSDP_SHARDING_STRATEGY", "FSDP_FORWARD_PREFETCH",
                           "FSDP_USE_ORIG_PARAMS", "FSDP_SYNC_MODULE_STATES"}
    flags = torchrun_arguments(parallel)
    assert flags[flags.index("--nproc_per_node") + 1] == str(args.nproc_per_node)
    if parallel.nodes > 1:
        assert flags[flags.index("--nnodes") + 1] == str(args.nnodes)
        assert flags[flags.index("--node_rank") + 1] == "MACHINE_RANK" and args.node_rank == 0
        assert flags[flags.index("--rdzv_backend") + 1] == args.rdzv_backend
        assert flags[flags.index("--rdzv_endpoint") + 1] == args.rdzv_endpoint


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name][1].get("strategy") in FSDP_STRATEGIES])
def test_fsdp_plugin_built_from_the_launch_environment_is_the_planned_one(name, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    import accelerate.utils.dataclasses as accelerate_dataclasses
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import BackwardPrefetch, ShardingStrategy

    (model, gpu, run, parallel, breakdown), _, env = _launched_environment(name, tmp_path, monkeypatch)
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    # sync_module_states asks for an accelerator device; the plugin only names it (torch.device("cuda"))
    monkeypatch.setattr(accelerate_dataclasses, "get_torch_accelerator_backend", lambda: ("cuda", None))
    plugin = FullyShardedDataParallelPlugin()
    strategy = parallel.resolved_strategy
    assert plugin.fsdp_version == parallel.fsdp_version
    assert plugin.transformer_cls_names_to_wrap == [decoder_layer_class(model)]
    assert plugin.cpu_ram_efficient_loading is parallel.cpu_ram_efficient_loading
    assert plugin.activation_checkpointing is False
    if parallel.fsdp_version == 1:
        assert plugin.cpu_offload.offload_params is (parallel.offload == "params")
    else:
        from torch.distributed.fsdp import CPUOffloadPolicy

        assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) is (parallel.offload == "params")
    if parallel.fsdp_version == 1:
        planned_strategy = {"fsdp": "FULL_SHARD", "fsdp-grad-op": "SHARD_GRAD_OP", "fsdp-hybrid": "HYBRID_SHARD"}
        assert plugin.sharding_strategy == ShardingStrategy[planned_strategy[strategy]]
        assert plugin.backward_prefetch == (BackwardPrefetch.BACKWARD_PRE if parallel.backward_prefetch else None)
        assert plugin.forward_prefetch is parallel.forward_prefetch
        assert plugin.sync_module_states is parallel.cpu_ram_efficient_loading
    else:
        assert plugin.reshard_after_forward is (strategy != "fsdp-grad-op")


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name][1].get("strategy") in ZERO_STRATEGIES])
def test_deepspeed_plugin_built_from_the_launch_environment_reads_the_planned_json(name, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin

    (model, gpu, run, parallel, breakdown), _, env = _launched_environment(name, tmp_path, monkeypatch)
    (tmp_path / DEEPSPEED_CONFIG_FILE).write_text(deepspeed_json(model, gpu, run, parallel, breakdown))
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()  # runs _deepspeed_config_checks on ACCELERATE_CONFIG_DS_FIELDS
    plugin.set_mixed_precision(env["ACCELERATE_MIXED_PRECISION"])
    offloaded = parallel.offload_device if parallel.offload != "none" else "none"
    assert plugin.zero_stage == int(parallel.resolved_strategy[-1])
    assert plugin.offload_optimizer_device == offloaded
    assert plugin.zero3_init_flag is (parallel.resolved_strategy == "zero3")
    assert plugin.deepspeed_config["bf16"]["enabled"] is (breakdown.compute_dtype == "bf16")
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == run.micro_batch_size


def test_each_family_wraps_its_transformers_decoder_layer():
    transformers = pytest.importorskip("transformers")
    import importlib

    from vramplan.specs import ModelSpec

    names = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    for family in families():
        model_type = next(iter(family.model_types))
        package = model_type.removesuffix("_text")
        module = importlib.import_module(f"transformers.models.{package}.modeling_{package}")
        spec = ModelSpec(name="x", architecture=family.name, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=1, num_attention_heads=4, vocab_size=128)
        assert getattr(module, names[model_type])._no_split_modules == [decoder_layer_class(spec)], family.name


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name][1].get("strategy") in ZERO_STRATEGIES])
def test_deepspeed_json_names_only_accepted_keys_and_parses_with_deepspeed(name):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    model, gpu, run, parallel, breakdown = case(name)
    config = json.loads(deepspeed_json(model, gpu, run, parallel, breakdown))
    accepted = fields_of("deepspeed")
    assert set(config) - {"_comment"} <= accepted["top_level"]
    zero = config["zero_optimization"]
    assert set(zero) <= accepted["zero_optimization"]
    for section in ("offload_optimizer", "offload_param"):
        assert set(zero.get(section, {})) <= accepted[section]
    assert set(config["bf16"]) <= accepted["bf16"] and set(config["fp16"]) <= accepted["fp16"]
    assert set(config.get("tensor_parallel", {})) <= accepted["tensor_parallel"]
    parsed = DeepSpeedConfig(config)
    assert parsed.tensor_parallel_config.autotp_size == (parallel.tensor_parallel if parallel.tensor_parallel > 1 else 0)
    hidden = model.hidden_size
    stage = int(parallel.resolved_strategy[-1])
    assert parsed.zero_optimization_stage == stage
    assert (parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps) \
        == (run.micro_batch_size, run.grad_accum_steps)
    assert parsed.bfloat16_config.enabled is (breakdown.compute_dtype == "bf16")
    zero_config = parsed.zero_config
    assert zero_config.overlap_comm is resolved_overlap_comm(parallel)  # the plan's assumption, written out
    expected_reduce = auto_bucket_sizes(hidden)["reduce_bucket_size"] if parallel.reduce_bucket_size == "auto" \
        else parallel.reduce_bucket_size
    assert zero_config.reduce_bucket_size == expected_reduce
    offloaded = parallel.offload != "none"
    assert (zero_config.offload_optimizer.device if zero_config.offload_optimizer else "none") \
        == (parallel.offload_device if offloaded else "none")
    if stage == 3:
        assert zero_config.offload_param.device == (parallel.offload_device if parallel.offload == "params" else "none")
        assert zero_config.max_live_parameters == parallel.stage3_max_live_parameters
        prefetch = parallel.stage3_prefetch_bucket_size
        assert zero_config.prefetch_bucket_size == (int(0.9 * hidden * hidden) if prefetch == "auto" else prefetch)
        assert zero_config.param_persistence_threshold == 10 * hidden
    else:
        assert zero_config.allgather_bucket_size == parallel.allgather_bucket_size


class _ModelWithConfig:
    """What HfTrainerDeepSpeedConfig.trainer_config_finalize reads of a model: its config's hidden size."""

    def __init__(self, hidden_size: int):
        import transformers

        self.config = transformers.LlamaConfig(hidden_size=hidden_size)


def test_deepspeed_auto_sizes_are_the_ones_transformers_fills_in(tmp_path):
    pytest.importorskip("deepspeed")
    pytest.importorskip("transformers")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    model, gpu, run, parallel, breakdown = case("zero3-offload-optimizer")
    ours = deepspeed_config(model, gpu, run, parallel, breakdown)["zero_optimization"]
    auto = {**ours, **dict.fromkeys(auto_bucket_sizes(1), "auto")}
    filled = HfTrainerDeepSpeedConfig({"zero_optimization": auto})
    filled.trainer_config_finalize(_training_arguments(tmp_path, run, breakdown), _ModelWithConfig(model.hidden_size),
                                   num_training_steps=1)
    assert {name: filled.config["zero_optimization"][name] for name in auto_bucket_sizes(1)} \
        == {name: ours[name] for name in auto_bucket_sizes(1)}


def _training_arguments(tmp_path, run, breakdown, **overrides):
    transformers = pytest.importorskip("transformers")
    from vramplan.emit_common import mixed_precision

    fields = dict(output_dir=str(tmp_path), per_device_train_batch_size=run.micro_batch_size,
                  gradient_accumulation_steps=run.grad_accum_steps,
                  bf16=mixed_precision(run, breakdown) == "bf16" or breakdown.compute_dtype == "bf16", use_cpu=True)
    return transformers.TrainingArguments(**(fields | overrides))


@pytest.mark.parametrize("name", ["zero1", "zero3-offload-optimizer"])
def test_transformers_accepts_the_json_for_the_planned_arguments_and_refuses_another_batch(name, tmp_path):
    pytest.importorskip("deepspeed")
    pytest.importorskip("transformers")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    model, gpu, run, parallel, breakdown = case(name)
    config = deepspeed_config(model, gpu, run, parallel, breakdown)
    planned_arguments = _training_arguments(tmp_path, run, breakdown)
    accepted = HfTrainerDeepSpeedConfig(json.loads(json.dumps(config)))
    accepted.trainer_config_process(planned_arguments)
    accepted.trainer_config_finalize(planned_arguments, _ModelWithConfig(model.hidden_size), num_training_steps=10)
    assert accepted.config["gradient_clipping"] == 1.0  # the Trainer's max_grad_norm filled the "auto"
    other_batch = _training_arguments(tmp_path, run, breakdown, per_device_train_batch_size=run.micro_batch_size + 1)
    refused = HfTrainerDeepSpeedConfig(json.loads(json.dumps(config)))
    refused.trainer_config_process(other_batch)
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu"):
        refused.trainer_config_finalize(other_batch, _ModelWithConfig(model.hidden_size), num_training_steps=10)


def test_offloading_adamw_names_deepspeeds_adamw_and_another_optimizer_is_allowed_through():
    model, gpu, run, parallel, breakdown = case("zero3-offload-optimizer")
    adamw = deepspeed_config(model, gpu, run, parallel, breakdown)
    assert adamw["optimizer"]["type"] == "AdamW" and "zero_force_ds_cpu_optimizer" not in adamw
    model, gpu, run, parallel, breakdown = case("zero2-offload-sgd")
    sgd = deepspeed_config(model, gpu, run, parallel, breakdown)
    assert "optimizer" not in sgd and sgd["zero_force_ds_cpu_optimizer"] is False
    model, gpu, run, parallel, breakdown = case("zero1")
    assert "optimizer" not in deepspeed_config(model, gpu, run, parallel, breakdown)


def test_pure_bf16_full_fine_tuning_keeps_no_fp32_master_copy_in_zero():
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    model, gpu, run, parallel, breakdown = planned(dict(method="full", full_precision="pure"),
                                                   dict(gpus=4, strategy="zero2"))
    config = deepspeed_config(model, gpu, run, parallel, breakdown)
    assert config["bf16"] == {"enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}
    assert DeepSpeedConfig(config).bfloat16_config.bf16_optimizer_states is True


def test_accelerate_under_zero_prints_both_files_ready_to_save(tmp_path):
    yaml = pytest.importorskip("yaml")
    model, gpu, run, parallel, breakdown = case("zero3-offload-optimizer")
    text = emit_parallel("accelerate", model, gpu, run, parallel, breakdown)
    head, _, json_block = text.partition(f"==> {DEEPSPEED_CONFIG_FILE} <==\n")
    assert head.startswith("==> accelerate.yaml <==\n")
    assert yaml.safe_load(head.removeprefix("==> accelerate.yaml <==\n"))["deepspeed_config"]
    assert json.loads(json_block) == deepspeed_config(model, gpu, run, parallel, breakdown)
    fsdp = emit_parallel("accelerate", *case("fsdp1-lora"))
    assert "==>" not in fsdp and yaml.safe_load(fsdp)["distributed_type"] == "FSDP"


def test_single_gpu_accelerate_config_says_so_and_deepspeed_needs_a_zero_strategy():
    model, gpu, run, _, breakdown = case("single")
    text = emit_parallel("accelerate", model, gpu, run, None, breakdown)
    assert "the plan is single-GPU" in text and 'distributed_type: "NO"' in text
    assert text == emit_parallel("accelerate", model, gpu, run, ParallelConfig(), breakdown)
    with pytest.raises(InputError, match="emit deepspeed: the plan's strategy is fsdp; pass --strategy zero1, "
                                         "zero2 or zero3"):
        emit_parallel("deepspeed", *case("fsdp1-lora"))
    with pytest.raises(InputError, match="strategy is single"):
        emit_parallel("deepspeed", model, gpu, run, None, breakdown)


def test_settings_a_config_file_cannot_carry_are_said_in_comments():
    assert "DDP bucket_cap_mb 100" in _accelerate_yaml("ddp-4")
    assert "limit_all_gathers=False" in _accelerate_yaml("fsdp1-hybrid-2-nodes-qlora")
    assert "bnb_4bit_quant_storage" in _accelerate_yaml("fsdp1-hybrid-2-nodes-qlora")
    assert "its own FSDP unit for a peft model, as planned" in _accelerate_yaml("fsdp1-lora")  # fsdp_wrap's default
    assert "forward prefetch" not in _accelerate_yaml("fsdp2-full")
    assert "tp_plan='auto'" in _accelerate_yaml("fsdp2-hybrid-tp")
    zero3_qlora = _accelerate_yaml("zero3-tp-qlora")
    assert "so ZeRO-3 can shard the 4-bit weights" in zero3_qlora
    assert "accelerate sets it with FSDP2" in _accelerate_yaml("ddp-tp")
    model, gpu, run, parallel, breakdown = case("zero3-params-nvme-3-nodes")
    assert "nvme_path" in deepspeed_config(model, gpu, run, parallel, breakdown)["_comment"]


@pytest.mark.parametrize("target", ["accelerate", "deepspeed"])
def test_cli_emit_multi_gpu_targets(target):
    command = [sys.executable, "-m", "vramplan.cli.main", "fit", "--model", "llama-3.1-8b", "--gpu", "h100",
               "--method", "lora", "--emit", target]
    result = subprocess.run(command, capture_output=True, text=True)
    if target == "accelerate":
        assert result.returncode == 0 and result.stdout.startswith("# vramplan plan: llama-3.1-8b")
        assert "accelerate launch --config_file accelerate.yaml train.py" in result.stdout
    else:
        assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert "pass --strategy zero1, zero2 or zero3" in result.stderr
