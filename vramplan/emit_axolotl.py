"""The plan as an axolotl config YAML (`vramplan fit --emit axolotl`), for `axolotl train <file>`.

Field names from axolotl 0.18.0 (commit 067b021; committed in vramplan/emit_fields/axolotl.json),
behaviour from its source: loaders/model.py builds BitsAndBytesConfig(nf4, double quant, compute
dtype = cfg.torch_dtype) for `adapter: qlora` + `load_in_4bit`, updated by `bnb_config_kwargs`, and 8-bit
for `adapter: lora` + `load_in_8bit`; it calls peft's prepare_model_for_kbit_training on 4/8-bit
models (`embeddings_skip_upcast` patches it to leave embed_tokens and lm_head 16-bit);
utils/config/__init__.py sets torch_dtype from bf16/fp16 (the load dtype, so full fine-tuning has no
fp32 master weights); loaders/adapter.py passes `peft_autocast_adapter_dtype` to get_peft_model.
"""
from __future__ import annotations

from vramplan.emit_common import (header_lines, lora_targets, mixed_precision, optimizer_for, reentrant,
                                  require_training, yaml_lines)
from vramplan.emit_hf import TORCH_DTYPES, checkpoint_id
from vramplan.memory.activations import effective_attention
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

TARGET_VERSIONS = "axolotl 0.18.0 (commit 067b021)"


def _quantization(model: ModelSpec, run: RunConfig, breakdown: Breakdown) -> list:
    fmt, stored = breakdown.weight_format, model.stored_weight_format
    if fmt in ("nf4", "fp4") and not stored:
        entries = [("load_in_4bit", True)]
        kwargs = {}
        if fmt != "nf4":
            kwargs["bnb_4bit_quant_type"] = fmt
        if not run.double_quant:
            kwargs["bnb_4bit_use_double_quant"] = False
        if kwargs:
            entries.append(("bnb_config_kwargs", kwargs, "axolotl's default is nf4 with double quantization"))
        if run.quant_blocksize != 64:
            entries.append(f"bitsandbytes' 4-bit block size {run.quant_blocksize} is not a BitsAndBytesConfig field")
        return entries
    if fmt == "int8" and not stored:
        return [("load_in_8bit", True)]
    if stored == fmt or fmt in TORCH_DTYPES and not stored:
        return [f"{fmt}: the checkpoint's config.json carries the quantization_config" if stored
                else f"{fmt} weights: no quantization"]
    return [f"the plan is for {fmt} weights but {checkpoint_id(model)} stores {stored or 'float weights'}: "
            f"point base_model at a {fmt} checkpoint of this model"]


def _kbit_prep(run: RunConfig, breakdown: Breakdown) -> list:
    if run.method != "qlora":
        return []
    if run.kbit_prep is True:
        return []  # axolotl's default: peft's prepare_model_for_kbit_training
    if run.kbit_prep == "norms":
        return [("embeddings_skip_upcast", True, "prepare_model_for_kbit_training upcasts all but embed/lm_head")]
    return ["axolotl always runs prepare_model_for_kbit_training on 4/8-bit models; the plan counted no upcast"]


def axolotl_yaml(model: ModelSpec, gpu: GPUSpec, run: RunConfig, breakdown: Breakdown) -> str:
    """An axolotl config with every knob the plan assumed; a comment where it cannot say one."""
    require_training("axolotl", run)
    optim, optim_args = optimizer_for("axolotl", run.optimizer)
    mixed = mixed_precision(run, breakdown)
    attention = effective_attention(model, run)
    entries: list = [*header_lines(model, gpu, run, breakdown, TARGET_VERSIONS), "",
                     ("base_model", checkpoint_id(model)), *_quantization(model, run, breakdown)]
    if run.uses_lora:
        eight_bit = breakdown.weight_format == "int8" and not model.stored_weight_format
        adapter = "qlora" if run.method == "qlora" and not eight_bit else "lora"
        targets = lora_targets(run)
        entries += [("adapter", adapter), ("lora_r", run.lora_rank), ("lora_alpha", run.resolved_lora_alpha),
                    ("lora_dropout", run.lora_dropout)]
        entries += [("lora_target_linear", True)] if targets is None else [("lora_target_modules", list(targets))]
        entries.append(("peft_autocast_adapter_dtype", run.lora_dtype == "fp32",
                        "false: adapters stay in the load dtype"))
        if run.lora_dtype == "fp16" and breakdown.compute_dtype != "fp16":
            entries.append(f"the plan counted fp16 adapters; they stay in the load dtype ({breakdown.compute_dtype})")
    entries += _kbit_prep(run, breakdown)
    entries += ["", ("datasets", [{"path": "tatsu-lab/alpaca", "type": "alpaca"}], "yours"), ("output_dir", "./out"),
                ("sequence_len", run.seq_len), ("sample_packing", False),
                ("pad_to_sequence_len", True, "the plan counts batches of sequence_len tokens"),
                ("micro_batch_size", run.micro_batch_size),
                ("gradient_accumulation_steps", run.grad_accum_steps),
                ("gradient_checkpointing", run.gradient_checkpointing)]
    if run.gradient_checkpointing:
        entries.append(("gradient_checkpointing_kwargs", {"use_reentrant": reentrant(breakdown)}, "as planned"))
    entries.append(("optimizer", optim))
    entries += [(key, value) for key, value in optim_args.items()]
    entries += [("bf16", mixed == "bf16" or run.method == "full" and breakdown.compute_dtype == "bf16"),
                ("fp16", mixed == "fp16" or run.method == "full" and breakdown.compute_dtype == "fp16")]
    if run.method == "full" and run.full_precision == "mixed":
        entries.append("axolotl loads the weights in the bf16/fp16 dtype: no fp32 master weights as this plan "
                       "counted (plan with --full-precision pure)")
    entries.append(("attn_implementation", attention,
                    f"{model.architecture} has no {run.attention} path" if attention != run.attention else None))
    if run.loss_impl == "chunked":
        entries += [("chunked_cross_entropy", True), ("chunked_cross_entropy_num_chunks", run.loss_chunks)]
    return "\n".join(yaml_lines(entries)) + "\n"


__all__ = ["TARGET_VERSIONS", "axolotl_yaml"]
