"""What the `--emit` recipe writers share: the plan's header line, its LoRA targets, dtype names,
checkpointing and optimizer as each framework spells them.

Frameworks: "trl", "llama-factory", "axolotl" all hand `optim` to transformers'
`TrainingArguments` (training_args.py `OptimizerNames`, 5.24), so they share the registry's
`hf_optim`; torchtune builds the optimizer from a dotted `_component_` path with keyword
arguments (recipes/configs/*.yaml `optimizer._component_`, 0.6.1), which is the registry's
`library_class` and `class_kwargs`. Emitters format; the numbers come from the plan.
"""
from __future__ import annotations

import json
import re

from vramplan.errors import InputError
from vramplan.optimizers import get_optimizer, optimizer_names
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.run import ALL_LINEAR

HF_TRAINER_FRAMEWORKS = ("trl", "llama-factory", "axolotl")
BNB_4BIT_FORMATS = ("nf4", "fp4")


def framework_optimizers() -> dict[str, dict[str, tuple[str, dict]]]:
    """{registry name: {framework: (optimizer name, its extra arguments)}} for every registered
    optimizer: HF-Trainer frameworks get (`hf_optim`, {"optim_args": ...} if any), torchtune gets
    (`library_class`, `class_kwargs`)."""
    table = {}
    for name in optimizer_names():
        entry = get_optimizer(name)
        hf_args = {"optim_args": entry.hf_optim_args} if entry.hf_optim_args else {}
        table[name] = {**{framework: (entry.hf_optim, hf_args) for framework in HF_TRAINER_FRAMEWORKS},
                       "torchtune": (entry.library_class, dict(entry.class_kwargs))}
    return table


def optimizer_for(framework: str, registry_name: str) -> tuple[str, dict]:
    """How `framework` names the plan's optimizer, and the arguments that select the same settings."""
    return framework_optimizers()[registry_name][framework]


def header_lines(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown, written_for: str) -> list[str]:
    """Comment lines (without the leading '# ') naming the plan, its verdict and the target version."""
    verdict = "fits" if breakdown.fits else "DOES NOT FIT"
    return [f"vramplan plan: {model.name} on {gpu.name}, {run.method}: {verdict} "
            f"(needs {breakdown.required_bytes / 2**30:.2f} of {breakdown.capacity_bytes / 2**30:.2f} GiB)",
            f"written for {written_for}"]


def lora_targets(run: RunConfig) -> tuple[str, ...] | None:
    """The planned LoRA target module names, or None for peft's "all-linear" (every linear but lm_head)."""
    return None if run.lora_targets == (ALL_LINEAR,) else tuple(run.lora_targets)


def mixed_precision(run: RunConfig, breakdown: Breakdown) -> str | None:
    """The autocast dtype the HF Trainer runs under (its bf16=/fp16= flag), or None for none:
    adapters always train under autocast in the compute dtype; full fine-tuning only when mixed."""
    if run.method != "full" or run.full_precision == "mixed":
        return breakdown.compute_dtype if breakdown.compute_dtype in ("bf16", "fp16") else None
    return None


def reentrant(breakdown: Breakdown) -> bool:
    """Whether the plan counted reentrant checkpointing (`Breakdown.stack["checkpointing"]`)."""
    return breakdown.stack.get("checkpointing") == "reentrant"


def loads_with_bitsandbytes(model: ModelSpec, breakdown: Breakdown) -> bool:
    """bitsandbytes quantizes float weights at load time; a pre-quantized checkpoint carries its own config."""
    return breakdown.weight_format in BNB_4BIT_FORMATS + ("int8",) and not model.stored_weight_format


def require_training(framework: str, run: RunConfig) -> None:
    if not run.trains:
        raise InputError("--emit", f"{framework} writes training recipes; --method inference has none "
                                   "(use --emit hf for a generate snippet)")


_PLAIN_YAML = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def yaml_scalar(value) -> str:
    """A YAML 1.1 scalar for a bool, number, None, string or list of them (flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_scalar(item) for item in value) + "]"
    text = str(value)
    return text if _PLAIN_YAML.fullmatch(text) and text.lower() not in _YAML_WORDS else json.dumps(text)


def yaml_lines(entries) -> list[str]:
    """`key: value  # comment` lines; an entry is (key, value) or (key, value, comment), where a dict
    value is written as a nested block mapping and a list of dicts as a block sequence of mappings;
    a plain string is a comment line of its own."""
    lines = []
    for entry in entries:
        if isinstance(entry, str):
            lines.append(entry if entry == "" else f"# {entry}")
            continue
        key, value, *comment = entry
        suffix = f"  # {comment[0]}" if comment and comment[0] else ""
        if isinstance(value, dict):
            lines.append(f"{key}:{suffix}")
            lines += [f"  {name}: {yaml_scalar(item)}" for name, item in value.items()]
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            lines.append(f"{key}:{suffix}")
            for item in value:
                lines += [("  - " if index == 0 else "    ") + f"{name}: {yaml_scalar(field)}"
                          for index, (name, field) in enumerate(item.items())]
        else:
            lines.append(f"{key}: {yaml_scalar(value)}{suffix}")
    return lines


__all__ = ["HF_TRAINER_FRAMEWORKS", "framework_optimizers", "header_lines", "loads_with_bitsandbytes",
           "lora_targets", "mixed_precision", "optimizer_for", "reentrant", "require_training",
           "yaml_lines", "yaml_scalar"]
