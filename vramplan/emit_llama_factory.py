"""The plan as a LLaMA-Factory training YAML (`vramplan fit --emit llama-factory`), for
`llamafactory-cli train <file>`.

Field names and meanings from LLaMA-Factory 0.9.6.dev0 (commit ff6d4d1; the names are committed in
vramplan/emit_fields/llama_factory.json): hparams/model_args.py (quantization_bit/_method/_type,
double_quantization, flash_attn: auto|disabled|sdpa|fa2|fa3, disable_gradient_checkpointing,
use_reentrant_gc, upcast_layernorm, enable_liger_kernel), finetuning_args.py (finetuning_type,
lora_rank/alpha/dropout/target with "all" for every linear layer, pure_bf16), data_args.py
(cutoff_len, packing) and transformers' Seq2SeqTrainingArguments (batch, accumulation, optim, bf16).
model/model_utils/quantization.py builds the BitsAndBytesConfig with the compute dtype from
bf16/fp16; model/adapter.py casts trainable parameters to fp32 unless pure_bf16; it never calls
prepare_model_for_kbit_training (upcast_layernorm upcasts only the norms).
"""
from __future__ import annotations

from vramplan.emit_common import (header_lines, lora_targets, mixed_precision, optimizer_for, reentrant,
                                  require_training, yaml_lines)
from vramplan.emit_hf import checkpoint_id
from vramplan.memory.activations import effective_attention
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

TARGET_VERSIONS = "LLaMA-Factory 0.9.6 (commit ff6d4d1), transformers 5.24"
# model_args.py flash_attn (extras/constants.py AttentionFunction): our attention -> its word
FLASH_ATTN = {"sdpa": "sdpa", "flash_attention_2": "fa2", "eager": "disabled"}


def _quantization(model: ModelSpec, run: RunConfig, breakdown: Breakdown) -> list:
    fmt, stored = breakdown.weight_format, model.stored_weight_format
    if fmt in ("nf4", "fp4") and not stored:
        entries = [("quantization_bit", 4), ("quantization_method", "bnb"), ("quantization_type", fmt),
                   ("double_quantization", run.double_quant)]
        if run.quant_blocksize != 64:
            entries.append(f"bitsandbytes' 4-bit block size {run.quant_blocksize} cannot be set here (it is 64)")
        return entries
    if fmt == "int8" and not stored:
        return [("quantization_bit", 8), ("quantization_method", "bnb")]
    if stored == fmt or fmt in ("bf16", "fp16", "fp32") and not stored:
        return [f"{fmt}: the checkpoint's config.json carries the quantization_config" if stored
                else f"{fmt} weights: no quantization"]
    return [f"the plan is for {fmt} weights but {checkpoint_id(model)} stores {stored or 'float weights'}: "
            f"point model_name_or_path at a {fmt} checkpoint of this model"]


def _precision(run: RunConfig, breakdown: Breakdown) -> list:
    """bf16/fp16 autocast and pure_bf16 (no autocast, trainable params stay bf16) as planned."""
    mixed = mixed_precision(run, breakdown)
    if run.method == "full" and run.full_precision == "pure" or run.uses_lora and run.lora_dtype == "bf16":
        if breakdown.compute_dtype != "bf16":
            return [("fp16", True), f"LLaMA-Factory keeps trainable parameters in half precision only as bf16 "
                                    f"(pure_bf16); this plan's {breakdown.compute_dtype} ones become fp32"]
        entries = [("pure_bf16", True, "trainable parameters stay bf16, no autocast")]
        if run.method != "full":
            entries.append("pure_bf16 also turns off autocast, whose casts this plan counted")
        return entries
    entries = [("bf16", mixed == "bf16"), ("fp16", mixed == "fp16")]
    if run.uses_lora and run.lora_dtype == "fp16":
        entries.append("LLaMA-Factory casts trainable parameters to fp32; this plan counted fp16 adapters")
    return entries


def llama_factory_yaml(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown) -> str:
    """A LLaMA-Factory SFT config with every knob the plan assumed; a comment where it cannot say one."""
    require_training("llama-factory", run)
    optim, optim_args = optimizer_for("llama-factory", run.optimizer)
    attention = effective_attention(model, run)
    entries: list = [*header_lines(model, gpu, run, breakdown, TARGET_VERSIONS), "", "model",
                     ("model_name_or_path", checkpoint_id(model)),
                     *_quantization(model, run, breakdown),
                     ("flash_attn", FLASH_ATTN[attention],
                      f"{model.architecture} has no {run.attention} path" if attention != run.attention else None)]
    if run.method == "qlora" and run.kbit_prep is True:
        entries += [("upcast_layernorm", True),
                    "the plan counted peft's prepare_model_for_kbit_training (every non-quantized weight to fp32); "
                    "LLaMA-Factory never calls it and upcast_layernorm upcasts only the norms"]
    else:
        entries.append(("upcast_layernorm", run.method == "qlora" and run.kbit_prep == "norms"))
    entries += ["", "method", ("stage", "sft"), ("do_train", True),
                ("finetuning_type", "lora" if run.uses_lora else "full")]
    if run.uses_lora:
        targets = lora_targets(run)
        entries += [("lora_rank", run.lora_rank), ("lora_alpha", run.resolved_lora_alpha),
                    ("lora_dropout", run.lora_dropout),
                    ("lora_target", "all" if targets is None else ",".join(targets))]
    entries += ["", "dataset", ("dataset", "alpaca_en_demo", "yours (data/dataset_info.json)"),
                ("template", "default", "your model's chat template"),
                ("cutoff_len", run.seq_len), ("packing", False, "the plan counts padded batches of cutoff_len tokens"),
                "", "train", ("output_dir", "out"),
                ("per_device_train_batch_size", run.micro_batch_size),
                ("gradient_accumulation_steps", run.grad_accum_steps),
                ("disable_gradient_checkpointing", not run.gradient_checkpointing)]
    if run.gradient_checkpointing:
        entries.append(("use_reentrant_gc", reentrant(breakdown)))
    entries.append(("optim", optim))
    entries += [(key, value) for key, value in optim_args.items()]
    entries += _precision(run, breakdown)
    if run.loss_impl == "chunked":
        entries.append(("enable_liger_kernel", True, "chunked loss via liger-kernel's fused linear cross entropy "
                                                     "(pip install liger-kernel; a CUDA GPU)"))
    else:
        entries.append(("enable_liger_kernel", False))
    entries.append(("report_to", "none"))
    return "\n".join(yaml_lines(entries)) + "\n"


__all__ = ["FLASH_ATTN", "TARGET_VERSIONS", "llama_factory_yaml"]
