"""The plan as a TRL `SFTTrainer` script (`vramplan fit --emit trl`).

Facts from trl 1.16 (trl/trainer/sft_config.py, sft_trainer.py), on transformers 5.24 / peft 0.21:
SFTConfig defaults gradient checkpointing and bf16 on, so the script sets both explicitly;
`loss_type` is set to "nll" (its 1.16 default; "chunked_nll" is a deprecated alias). SFTTrainer
always computes the loss through a fused, chunked LM head (`add_fused_lm_head`), so the whole
logits a `--loss-impl standard` plan counts are never materialised. It never calls
`prepare_model_for_kbit_training`, so the script loads, prepares and peft-wraps the model itself
(as `--emit hf` does) and hands SFTTrainer the PeftModel. On a 4/8-bit model SFTTrainer casts every
trainable parameter to bf16 (`_is_quantized_model`), whatever peft made them.
"""
from __future__ import annotations

from vramplan.emit_common import (header_lines, loads_with_bitsandbytes, mixed_precision, optimizer_for, reentrant,
                                  require_training)
from vramplan.emit_hf import lora_config_lines, model_load_lines, quantization_lines
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

TARGET_VERSIONS = "trl 1.16, transformers 5.24, peft 0.21"


def _plan_mismatch_comments(model: ModelSpec, run: RunConfig, breakdown: Breakdown) -> list[str]:
    """What SFTTrainer does differently from the plan, whatever the config says."""
    comments = []
    if run.loss_impl == "standard":
        comments.append("# SFTTrainer computes the loss through a chunked fused LM head; this plan counted the whole "
                        "logits (--loss-impl standard), so it is an upper bound there (plan with --recipe trl-sft)")
    if run.uses_lora and loads_with_bitsandbytes(model, breakdown) and run.lora_dtype != "bf16":
        comments.append(f"# SFTTrainer casts the trainable LoRA weights of a 4/8-bit model to bf16; this plan counted "
                        f"them in {run.lora_dtype} (plan with --lora-dtype bf16 to match)")
    return comments


def trl_snippet(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown) -> str:
    """Python source: BitsAndBytesConfig, LoraConfig and SFTConfig as planned, then the model load
    and `SFTTrainer(...)` (after LOAD_MARKER; it downloads weights and wants your dataset)."""
    require_training("trl", run)
    quantization = quantization_lines(model, run, breakdown)
    optim, optim_args = optimizer_for("trl", run.optimizer)
    mixed = mixed_precision(run, breakdown)
    lines = ["# " + line for line in header_lines(model, gpu, run, breakdown, TARGET_VERSIONS)]
    lines += [
        "import torch",
        "from transformers import AutoModelForCausalLM"
        + (", BitsAndBytesConfig" if loads_with_bitsandbytes(model, breakdown) else ""),
        "from trl import SFTConfig, SFTTrainer",
    ]
    if run.uses_lora:
        lines.append("from peft import LoraConfig, get_peft_model"
                     + (", prepare_model_for_kbit_training" if run.method == "qlora" else ""))
    lines += ["", *quantization, *lora_config_lines(run)]
    lines += [
        "sft_config = SFTConfig(",
        '    output_dir="out",',
        f"    max_length={run.seq_len},",
        "    packing=False,  # the plan counts padded batches of max_length tokens",
        "    padding_free=False,",
        f"    per_device_train_batch_size={run.micro_batch_size},",
        f"    gradient_accumulation_steps={run.grad_accum_steps},",
        f"    activation_checkpointing={run.gradient_checkpointing},  # SFTConfig turns it on by default",
    ]
    if run.gradient_checkpointing:
        lines.append(f'    activation_checkpointing_kwargs={{"use_reentrant": {reentrant(breakdown)}}},  # as planned')
    lines.append(f'    optim="{optim}",')
    lines += [f'    {key}="{value}",' for key, value in optim_args.items()]
    lines += [
        f"    bf16={mixed == 'bf16'},  # SFTConfig turns bf16 on by default",
        f"    fp16={mixed == 'fp16'},",
        '    loss_type="nll",',
        '    report_to="none",',
        ")",
    ]
    lines += _plan_mismatch_comments(model, run, breakdown)
    lines += model_load_lines(model, run, breakdown, trainer="SFTConfig")
    lines += ["trainer = SFTTrainer(model=model, args=sft_config, train_dataset=train_dataset)  # your dataset",
              "trainer.train()"]
    return "\n".join(lines) + "\n"


__all__ = ["TARGET_VERSIONS", "trl_snippet"]
