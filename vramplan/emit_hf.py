"""The plan as ready-to-paste transformers + peft code (`vramplan fit --emit hf`).

The snippet has two parts: the configs (BitsAndBytesConfig, LoraConfig, TrainingArguments),
which build offline, and then the model load, which downloads weights. Names follow
transformers' `TrainingArguments.optim` values (transformers/training_args.py, OptimizerNames),
as each optimizer's registry entry (`vramplan.optimizers`) gives them.

It targets transformers 5.24 and peft 0.21: transformers 5 renamed `gradient_checkpointing*`
to `activation_checkpointing*` (training_args.py `__post_init__`: the old names are
FutureWarning aliases, removed in v6), so the snippet spells the new ones. It loads the
checkpoint the plan was made for (`ModelSpec.checkpoint_path`, else `hf_id`) with the
attention the plan used (`effective_attention`: Gemma-2 runs eager).
"""
from __future__ import annotations

import json

from vramplan.memory.activations import effective_attention
from vramplan.optimizers import get_optimizer
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

TARGET_VERSIONS = "transformers 5.24, peft 0.21"

TORCH_DTYPES = {"bf16": "torch.bfloat16", "fp16": "torch.float16", "fp32": "torch.float32"}
LOAD_MARKER = "# --- load the model (downloads the weights) ---"
BNB_FORMATS = ("nf4", "fp4", "int8")


def checkpoint_id(model: ModelSpec) -> str:
    """What `from_pretrained` loads: the local folder the spec was read from, else its HF repo."""
    return model.checkpoint_path or model.hf_id or model.name


def _format_comments(checkpoint: str, planned: str, stored: str) -> list[str]:
    """Why no BitsAndBytesConfig, or what to load when the checkpoint stores another format
    than the plan's (a float repo planned as gptq-4bit, a GPTQ folder planned as nf4)."""
    stored_text = f"{stored} weights" if stored else "float weights"
    if stored == planned:
        return [f"# {planned}: the checkpoint is pre-quantized; its config.json carries the quantization_config"]
    if planned in TORCH_DTYPES:
        return [f"# the plan is for {planned} weights but {checkpoint} stores {stored_text}: "
                "load the float (unquantized) checkpoint of this model instead"]
    if planned in BNB_FORMATS:  # bitsandbytes quantizes float weights at load time, not GPTQ/AWQ ones
        return [f"# the plan is for {planned} (bitsandbytes) but {checkpoint} stores {stored_text}: "
                "load the float (unquantized) checkpoint of this model instead and quantize it",
                f"# at load time with a BitsAndBytesConfig for {planned}"]
    method, bits = planned.split("-")
    bits = bits.removesuffix("bit")
    return [f"# the plan is for a {planned} checkpoint but {checkpoint} stores {stored_text}:",
            f"# load a {method.upper()} {bits}-bit quantization of it instead (its config.json has",
            f'# quantization_config with quant_method "{method}", bits {bits})'
            + (f", or quantize it once with GPTQConfig(bits={bits}, dataset=..., tokenizer=...)"
               if method == "gptq" else "")]


def _targets(run: RunConfig) -> str:
    if run.lora_targets == ("all-linear",):
        return '"all-linear"'
    return "[" + ", ".join(f'"{t}"' for t in run.lora_targets) + "]"


def quantization_lines(model: ModelSpec, run: RunConfig, breakdown: Breakdown) -> list[str]:
    """`bnb_config = BitsAndBytesConfig(...)` where bitsandbytes quantizes float weights at load
    time, else comments on what checkpoint to load for the planned format (none for float plans)."""
    fmt, compute, stored = breakdown.weight_format, breakdown.compute_dtype, model.stored_weight_format
    checkpoint = checkpoint_id(model)
    quantization = fmt in BNB_FORMATS and not stored
    lines: list[str] = []
    if fmt == "int8" and quantization:
        lines.append("bnb_config = BitsAndBytesConfig(load_in_8bit=True)")
    elif quantization:
        lines += [
            "bnb_config = BitsAndBytesConfig(",
            "    load_in_4bit=True,",
            f'    bnb_4bit_quant_type="{fmt}",',
            f"    bnb_4bit_use_double_quant={run.double_quant},",
            f"    bnb_4bit_compute_dtype={TORCH_DTYPES[compute]},",
            ")",
        ]
        if run.quant_blocksize != 64:
            lines.append(f"# note: bitsandbytes' 4-bit block size {run.quant_blocksize} is not a BitsAndBytesConfig field")
    elif fmt not in TORCH_DTYPES or stored:
        lines += _format_comments(checkpoint, fmt, stored)
    return lines


def lora_config_lines(run: RunConfig) -> list[str]:
    """`lora_config = LoraConfig(...)` with the planned rank, alpha, dropout and targets."""
    lines: list[str] = []
    if run.uses_lora:
        lines += [
            "lora_config = LoraConfig(",
            f"    r={run.lora_rank},",
            f"    lora_alpha={run.resolved_lora_alpha:g},",
            f"    lora_dropout={run.lora_dropout:g},",
            f"    target_modules={_targets(run)},",
            '    task_type="CAUSAL_LM",',
            ")",
        ]
    return lines


def model_load_lines(model: ModelSpec, run: RunConfig, breakdown: Breakdown,
                     trainer: str = "TrainingArguments") -> list[str]:
    """The model load as planned: checkpoint, quantization config, load dtype and attention, then
    the planned k-bit preparation and the peft wrap. `trainer` names what turns checkpointing on."""
    compute, fmt = breakdown.compute_dtype, breakdown.weight_format
    checkpoint = checkpoint_id(model)
    quantization = "bnb_config" if fmt in BNB_FORMATS and not model.stored_weight_format else None
    lines: list[str] = []
    load_dtype = compute if run.method != "full" or run.full_precision == "pure" else "fp32"
    if fmt in TORCH_DTYPES:
        load_dtype = fmt
    attention = effective_attention(model, run)
    lines += [
        "",
        LOAD_MARKER,
        "model = AutoModelForCausalLM.from_pretrained(",
        f"    {json.dumps(checkpoint)},",
        *([f"    quantization_config={quantization},"] if quantization else []),
        f"    dtype={TORCH_DTYPES[load_dtype]},",
        f'    attn_implementation="{attention}",'
        + (f"  # {model.architecture} has no {run.attention} path; planned as {attention}"
           if attention != run.attention else ""),
        ")",
    ]
    if run.method == "qlora" and run.kbit_prep == "norms":  # the QLoRA paper's qlora.py
        lines.append("for name, module in model.named_modules():")
        lines.append('    if "norm" in name:')
        lines.append("        module.to(torch.float32)  # norms only; embeddings and lm_head stay 16-bit")
    if run.method == "qlora" and run.kbit_prep is True:
        # peft's own checkpointing switch calls the deprecated gradient_checkpointing_enable;
        # the Trainer turns it on from activation_checkpointing instead
        lines.append("model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)"
                     + (f"  # {trainer} turns checkpointing on" if run.gradient_checkpointing else ""))
    if run.uses_lora:
        lines.append("model = get_peft_model(model, lora_config)")
    return lines


def hf_snippet(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown,
               include_model_load: bool = True) -> str:
    """Python source that sets up the planned run with transformers, peft and bitsandbytes."""
    compute = breakdown.compute_dtype
    fmt = breakdown.weight_format
    stored = model.stored_weight_format
    # a bitsandbytes config only where bnb quantizes float weights at load time
    quantization = "bnb_config" if fmt in BNB_FORMATS and not stored else None
    verdict = "fits" if breakdown.fits else "DOES NOT FIT"
    lines = [
        f"# vramplan plan: {model.name} on {gpu.name}, {run.method}: {verdict} "
        f"(needs {breakdown.required_bytes / 2**30:.2f} of {breakdown.capacity_bytes / 2**30:.2f} GiB)",
        f"# written for {TARGET_VERSIONS}",
        "import torch",
        "from transformers import AutoModelForCausalLM" + (", BitsAndBytesConfig" if quantization else "")
        + (", TrainingArguments" if run.trains else ""),
    ]
    if run.uses_lora:
        lines.append("from peft import LoraConfig" + (", get_peft_model" if include_model_load else "")
                     + (", prepare_model_for_kbit_training" if include_model_load and run.method == "qlora" else ""))
    lines += ["", f"max_seq_length = {run.seq_len}  # truncate/pack samples to this (e.g. trl SFTConfig(max_length=...))"]

    lines += quantization_lines(model, run, breakdown)
    lines += lora_config_lines(run)
    if run.trains:
        mixed = compute if run.method != "full" or run.full_precision == "mixed" else None
        lines += [
            "training_args = TrainingArguments(",
            '    output_dir="out",',
            f"    per_device_train_batch_size={run.micro_batch_size},",
            f"    gradient_accumulation_steps={run.grad_accum_steps},",
            f"    activation_checkpointing={run.gradient_checkpointing},  # transformers 4.x: gradient_checkpointing",
        ]
        if run.gradient_checkpointing:
            reentrant = breakdown.stack.get("checkpointing") == "reentrant"
            lines.append(f'    activation_checkpointing_kwargs={{"use_reentrant": {reentrant}}},  # as planned')
        optimizer = get_optimizer(run.optimizer)
        lines.append(f'    optim="{optimizer.hf_optim}",')
        if optimizer.hf_optim_args:
            lines.append(f'    optim_args="{optimizer.hf_optim_args}",')
        lines += [f"    bf16={mixed == 'bf16'},", f"    fp16={mixed == 'fp16'},"]
        if run.loss_impl == "chunked":
            lines += [
                "    # chunked loss: needs `pip install liger-kernel` (Triton kernels, a CUDA GPU); without it",
                "    # Trainer(...) raises ImportError; removing this line brings back the stock loss and its",
                "    # whole fp32 logits, which this plan did not count (plan that with --loss-impl standard)",
                "    use_liger_kernel=True,",
            ]
        lines += ['    report_to="none",', ")"]
    else:
        lines.append(f"generate_kwargs = dict(max_new_tokens={run.max_new_tokens}, "
                     f"num_return_sequences=1)  # batch {run.micro_batch_size} prompts of {run.seq_len} tokens")

    if include_model_load:
        lines += model_load_lines(model, run, breakdown)
    return "\n".join(lines) + "\n"


__all__ = ["LOAD_MARKER", "TARGET_VERSIONS", "TORCH_DTYPES", "checkpoint_id", "hf_snippet", "lora_config_lines",
           "model_load_lines", "quantization_lines"]
