"""The plan as ready-to-paste transformers + peft code (`vramplan fit --emit hf`).

The snippet has two parts: the configs (BitsAndBytesConfig, LoraConfig, TrainingArguments),
which build offline, and then the model load, which downloads weights. Names follow
transformers' `TrainingArguments.optim` values (transformers/training_args.py, OptimizerNames).
"""
from __future__ import annotations

from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

HF_OPTIMIZERS = {
    "adamw": "adamw_torch",
    "adamw_fused": "adamw_torch_fused",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw": "paged_adamw_32bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "sgd": "sgd",
    "sgd_momentum": "sgd",
    "adafactor": "adafactor",
}
TORCH_DTYPES = {"bf16": "torch.bfloat16", "fp16": "torch.float16", "fp32": "torch.float32"}
LOAD_MARKER = "# --- load the model (downloads the weights) ---"


def _targets(run: RunConfig) -> str:
    if run.lora_targets == ("all-linear",):
        return '"all-linear"'
    return "[" + ", ".join(f'"{t}"' for t in run.lora_targets) + "]"


def hf_snippet(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown,
               include_model_load: bool = True) -> str:
    """Python source that sets up the planned run with transformers, peft and bitsandbytes."""
    compute = breakdown.compute_dtype
    fmt = breakdown.weight_format
    verdict = "fits" if breakdown.fits else "DOES NOT FIT"
    lines = [
        f"# vramplan plan: {model.name} on {gpu.name}, {run.method}: {verdict} "
        f"(needs {breakdown.required_bytes / 2**30:.2f} of {breakdown.capacity_bytes / 2**30:.2f} GiB)",
        "import torch",
        "from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainingArguments",
    ]
    if run.uses_lora:
        lines.append("from peft import LoraConfig" + (", get_peft_model" if include_model_load else "")
                     + (", prepare_model_for_kbit_training" if include_model_load and run.method == "qlora" else ""))
    lines += ["", f"max_seq_length = {run.seq_len}  # truncate/pack samples to this (e.g. trl SFTConfig(max_length=...))"]

    quantization = None
    if fmt in ("nf4", "fp4"):
        quantization = "bnb_config"
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
    elif fmt == "int8":
        quantization = "bnb_config"
        lines.append("bnb_config = BitsAndBytesConfig(load_in_8bit=True)")
    elif fmt not in TORCH_DTYPES:
        lines.append(f"# {fmt}: the quantization config comes with the pre-quantized checkpoint")

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
    if run.trains:
        mixed = compute if run.method != "full" or run.full_precision == "mixed" else None
        lines += [
            "training_args = TrainingArguments(",
            '    output_dir="out",',
            f"    per_device_train_batch_size={run.micro_batch_size},",
            f"    gradient_accumulation_steps={run.grad_accum_steps},",
            f"    gradient_checkpointing={run.gradient_checkpointing},",
        ]
        if run.gradient_checkpointing:
            lines.append('    gradient_checkpointing_kwargs={"use_reentrant": False},')
        lines.append(f'    optim="{HF_OPTIMIZERS[run.optimizer]}",')
        if run.optimizer == "sgd_momentum":
            lines.append('    optim_args="momentum=0.9",')
        lines += [f"    bf16={mixed == 'bf16'},", f"    fp16={mixed == 'fp16'},"]
        if run.loss_impl == "chunked":
            lines.append("    use_liger_kernel=True,  # fused/chunked cross-entropy: logits never upcast whole")
        lines += ['    report_to="none",', ")"]
    else:
        lines.append(f"generate_kwargs = dict(max_new_tokens={run.max_new_tokens}, "
                     f"num_return_sequences=1)  # batch {run.micro_batch_size} prompts of {run.seq_len} tokens")

    if include_model_load:
        load_dtype = compute if run.method != "full" or run.full_precision == "pure" else "fp32"
        if fmt in TORCH_DTYPES:
            load_dtype = fmt
        lines += [
            "",
            LOAD_MARKER,
            "model = AutoModelForCausalLM.from_pretrained(",
            f'    "{model.hf_id or model.name}",',
            *([f"    quantization_config={quantization},"] if quantization else []),
            f"    dtype={TORCH_DTYPES[load_dtype]},",
            f'    attn_implementation="{run.attention}",',
            ")",
        ]
        if run.method == "qlora" and run.kbit_prep:
            lines.append(f"model = prepare_model_for_kbit_training(model, use_gradient_checkpointing="
                         f"{run.gradient_checkpointing})")
        if run.uses_lora:
            lines.append("model = get_peft_model(model, lora_config)")
    return "\n".join(lines) + "\n"


__all__ = ["HF_OPTIMIZERS", "LOAD_MARKER", "hf_snippet"]
