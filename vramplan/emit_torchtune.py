"""The plan as a torchtune command: its bundled single-device recipe config plus `key=value`
overrides (`vramplan fit --emit torchtune`).

Facts from torchtune 0.6.1: recipes/lora_finetune_single_device.py and full_finetune_single_device.py
train in `dtype` (bf16 or fp32; fp16 raises) with no autocast, LoRA weights included;
`model._component_` is a builder (`qlora_*` wraps the frozen base in torchao's NF4Tensor, always with
its per-block scalers quantized); `model.lora_attn_modules` takes q_proj/k_proj/v_proj/output_proj,
`apply_lora_to_mlp` all of the MLP or none, `apply_lora_to_output` the output projection; attention is
torchtune's own SDPA module. torchtune/config/_utils.py: `~key` drops a key of the base config.
Which builder and config a catalog model maps to is data: vramplan/emit_fields/torchtune.json.
"""
from __future__ import annotations

import json
from functools import cache
from importlib import resources

from vramplan.emit_common import header_lines, lora_targets, optimizer_for, require_training
from vramplan.errors import InputError
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

TARGET_VERSIONS = "torchtune 0.6.1"
RECIPE_SCRIPTS = {"full": "full_finetune_single_device", "lora": "lora_finetune_single_device",
                  "qlora": "lora_finetune_single_device"}
# peft module name -> torchtune's name for it (torchtune/modules/peft/lora.py LORA_ATTN_MODULES)
ATTENTION_MODULES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "output_proj"}
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
CHUNKED_LOSS = "torchtune.modules.loss.CEWithChunkedOutputLoss"
STANDARD_LOSS = "torch.nn.CrossEntropyLoss"


@cache
def torchtune_models() -> dict:
    text = resources.files("vramplan").joinpath("emit_fields/torchtune.json").read_text()
    return json.loads(text)["models"]


def _lora_overrides(run: RunConfig, takes_output: bool) -> list[str]:
    targets = lora_targets(run)
    if targets is None:  # peft "all-linear": every linear layer of the blocks, not lm_head
        attention, mlp, output = list(ATTENTION_MODULES.values()), True, False
    else:
        unknown = [name for name in targets if name not in ATTENTION_MODULES and name not in MLP_MODULES + ("lm_head",)]
        mlp_given = [name for name in targets if name in MLP_MODULES]
        if unknown or mlp_given and len(mlp_given) != len(MLP_MODULES):
            raise InputError("lora_targets", "torchtune takes LoRA on q_proj, k_proj, v_proj, o_proj, lm_head and "
                                             "all of gate_proj, up_proj, down_proj or none of them "
                                             f"(got {', '.join(targets)})")
        attention = [ATTENTION_MODULES[name] for name in targets if name in ATTENTION_MODULES]
        mlp, output = bool(mlp_given), "lm_head" in targets
    if output and not takes_output:
        raise InputError("lora_targets", "this torchtune builder ties lm_head to the embedding and takes no LoRA on it")
    return [f"model.lora_attn_modules=[{','.join(attention)}]", f"model.apply_lora_to_mlp={mlp}",
            *([f"model.apply_lora_to_output={output}"] if takes_output else []), f"model.lora_rank={run.lora_rank}",
            f"model.lora_alpha={run.resolved_lora_alpha:g}", f"model.lora_dropout={run.lora_dropout:g}"]


def _optimizer_overrides(run: RunConfig, base_keys: list[str]) -> list[str]:
    component, kwargs = optimizer_for("torchtune", run.optimizer)
    dropped = [f"~optimizer.{key}" for key in base_keys if key not in ("_component_", "lr", "weight_decay")
               and key not in kwargs]
    return [f"optimizer._component_={component}", *dropped,
            *(f"optimizer.{key}={value}" for key, value in kwargs.items())]


def _unexpressed(model: ModelSpec, run: RunConfig, breakdown: Breakdown) -> list[str]:
    """Comments for planned knobs torchtune has no setting for."""
    comments = []
    if run.method == "qlora" and not run.double_quant:
        comments.append("torchao's NF4Tensor always quantizes its block scalers; the plan counted them unquantized")
    if run.method == "qlora" and run.kbit_prep:
        comments.append("torchtune upcasts nothing to fp32 (no prepare_model_for_kbit_training); the plan counted it")
    if run.uses_lora and run.lora_dtype != breakdown.compute_dtype:
        comments.append(f"torchtune keeps LoRA weights in dtype={breakdown.compute_dtype}; the plan counted "
                        f"{run.lora_dtype} (plan with --recipe torchtune)")
    if run.method == "full" and run.full_precision == "mixed":
        comments.append("torchtune has no autocast: weights, grads and optimizer state are all in dtype "
                        "(the plan counted fp32 master weights; plan with --full-precision pure)")
    if run.attention != "sdpa":
        comments.append(f"torchtune runs its own SDPA attention; the plan counted {run.attention}")
    return comments


def torchtune_command(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown) -> str:
    """`tune run <recipe> --config <bundled config>` with the planned knobs as overrides."""
    require_training("torchtune", run)
    if run.method == "qlora" and breakdown.weight_format != "nf4" or run.method != "qlora" \
            and breakdown.weight_format not in ("bf16", "fp32"):
        raise InputError("--emit", f"torchtune trains {run.method} on "
                                   f"{'nf4' if run.method == 'qlora' else 'bf16 or fp32'} weights, "
                                   f"not {breakdown.weight_format}")
    if breakdown.compute_dtype not in ("bf16", "fp32"):
        raise InputError("--emit", f"torchtune trains in bf16 or fp32, not {breakdown.compute_dtype} "
                                   "(plan with --compute-dtype bf16 on a GPU that has it)")
    entry = torchtune_models().get(model.name)
    if entry is None or run.method not in entry["configs"]:
        known = sorted(name for name, spec in torchtune_models().items() if run.method in spec["configs"])
        raise InputError("--model", f"torchtune {TARGET_VERSIONS.split()[-1]} bundles no single-device {run.method} "
                                    f"config for {model.name}; it does for {', '.join(known)}")
    config = entry["configs"][run.method]
    overrides = [f"model._component_={entry['builders'][run.method]}"]
    if run.uses_lora:
        overrides += _lora_overrides(run, entry["lora_to_output"])
    overrides += [f"batch_size={run.micro_batch_size}", f"gradient_accumulation_steps={run.grad_accum_steps}",
                  f"tokenizer.max_seq_len={run.seq_len}", "dataset.packed=False",
                  f"enable_activation_checkpointing={run.gradient_checkpointing}",
                  "enable_activation_offloading=False", f"dtype={breakdown.compute_dtype}", "compile=False"]
    if run.method == "full":
        overrides.append("optimizer_in_bwd=False")
    overrides += _optimizer_overrides(run, config["optimizer_keys"])
    if run.loss_impl == "chunked":
        overrides += [f"loss._component_={CHUNKED_LOSS}", f"loss.num_output_chunks={run.loss_chunks}"]
    else:
        overrides.append(f"loss._component_={STANDARD_LOSS}")
    lines = ["# " + line for line in header_lines(model, gpu, run, breakdown, TARGET_VERSIONS)]
    if run.gradient_checkpointing and breakdown.stack.get("checkpointing") == "reentrant":
        lines.append("# torchtune checkpoints non-reentrant; the plan counted reentrant checkpointing")
    lines += ["# " + comment for comment in _unexpressed(model, run, breakdown)]
    lines.append(f"tune run {RECIPE_SCRIPTS[run.method]} --config {config['config']} \\")
    lines += [f"    {override!r} \\" if any(ch in override for ch in "[]~") else f"    {override} \\"
              for override in overrides]
    lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines) + "\n"


def overrides_from_command(command: str) -> tuple[str, list[str]]:
    """(config name, the key=value / ~key overrides) of a command `torchtune_command` wrote."""
    import shlex

    words = shlex.split(" ".join(line for line in command.splitlines() if not line.startswith("#")).replace("\\", " "))
    config = words[words.index("--config") + 1]
    return config, words[words.index("--config") + 2:]


__all__ = ["TARGET_VERSIONS", "overrides_from_command", "torchtune_command", "torchtune_models"]
