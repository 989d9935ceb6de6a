"""Framework recipes: the memory knobs each fine-tuning framework sets, read from its own source.

A recipe fills the RunConfig fields the user did not give (`recipe_knobs`); what the framework does
that the planner cannot express is said in `not_modelled`, which the plan prints as notes. Batch size
and sequence length stay the user's: they are the data's, not the framework's.
"""
from __future__ import annotations

from dataclasses import dataclass

from vramplan.stack.profile import Stack
from vramplan.stack.rules import trainer_default_optimizer

RECIPES = ("hf-trainer", "trl-sft", "llama-factory", "unsloth", "axolotl", "torchtune")


@dataclass(frozen=True)
class Recipe:
    name: str
    knobs: dict  # RunConfig field -> value; "optimizer" may be TRAINER_DEFAULT
    sources: tuple[str, ...]
    not_modelled: tuple[str, ...] = ()


TRAINER_DEFAULT = "trainer default"  # resolved against the stack by trainer_default_optimizer

_CHUNKED_UPPER_BOUND = ("it never materialises the whole logits: the plan's chunked loss keeps the compute-dtype "
                        "logits (C x b x s x V), an upper bound")

_RECIPES = {
    "hf-trainer": Recipe(
        "hf-trainer",
        {"kbit_prep": True, "checkpointing_variant": "auto", "optimizer": TRAINER_DEFAULT, "loss_impl": "standard",
         "lora_dtype": "fp32"},
        ("transformers/training_args.py 5.24 (optim default)", "transformers/modeling_utils.py 5.24 (checkpointing)",
         "peft/utils/other.py 0.21 (prepare_model_for_kbit_training)", "peft/tuners/lora/model.py (fp32 adapters)"),
    ),
    "trl-sft": Recipe(
        "trl-sft",
        # SFTTrainer calls get_peft_model, never prepare_model_for_kbit_training; it enables input grads
        {"kbit_prep": False, "gradient_checkpointing": True, "checkpointing_variant": "non-reentrant",
         "optimizer": TRAINER_DEFAULT, "loss_impl": "chunked", "lora_dtype": "fp32"},
        ("trl/trainer/sft_config.py 1.9 (gradient_checkpointing=True, loss_type='chunked_nll', packing=False, "
         "padding_free=False)", "trl/trainer/sft_trainer.py 1.9 (use_reentrant=False, get_peft_model, "
         "enable_input_require_grads)"),
        (f"TRL's chunked_nll computes lm_head per chunk of tokens under checkpointing; {_CHUNKED_UPPER_BOUND}",
         "packing / padding-free batches (off by default) change the token count, not modelled",
         "enable_input_require_grads makes layer 1 save its norm input too (about 4 h B/token), not modelled"),
    ),
    "llama-factory": Recipe(
        "llama-factory",
        {"kbit_prep": False, "checkpointing_variant": "reentrant", "optimizer": TRAINER_DEFAULT,
         "loss_impl": "standard", "lora_rank": 8, "lora_dropout": 0.0, "lora_dtype": "fp32"},
        ("llamafactory/hparams/model_args.py (use_reentrant_gc=True, upcast_layernorm=False, "
         "upcast_lmhead_output=False; v0.9.5)", "llamafactory/hparams/finetuning_args.py (lora_rank=8, "
         "lora_dropout=0.0)", "llamafactory/model/model_utils/checkpointing.py (no prepare_model_for_kbit_training; "
         "trainable params cast to fp32)"),
    ),
    "unsloth": Recipe(
        "unsloth",
        {"kbit_prep": False, "gradient_checkpointing": True, "checkpointing_variant": "reentrant",
         "loss_impl": "chunked", "lora_rank": 16, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_dtype": "fp32",
         "optimizer": TRAINER_DEFAULT},
        ("unsloth/models/llama.py get_peft_model (r=16, lora_alpha=16, lora_dropout=0, "
         "use_gradient_checkpointing='unsloth'; 2026-08)", "unsloth/models/llama.py (unsloth_fused_ce_loss)"),
        ("Unsloth's 'unsloth' checkpointing offloads each layer's input to CPU: the plan keeps them on the GPU "
         "(R x h x b x s x layers too much)",
         f"unsloth_fused_ce_loss picks its own chunk size; {_CHUNKED_UPPER_BOUND}",
         "Unsloth's fused kernels (RMSNorm, RoPE, SwiGLU, LoRA MLP) save other tensors than transformers' modules"),
    ),
    "axolotl": Recipe(
        "axolotl",
        {"kbit_prep": True, "checkpointing_variant": "non-reentrant", "optimizer": "adamw_fused",
         "loss_impl": "standard", "lora_dtype": "fp32"},
        ("axolotl/loaders/model.py (prepare_model_for_kbit_training for lora/qlora on 4/8-bit; v0.18)",
         "axolotl/core/builders/base.py (gradient_checkpointing_kwargs use_reentrant=False)",
         "axolotl/utils/schemas/training.py (optimizer='adamw_torch_fused')"),
    ),
    "torchtune": Recipe(
        "torchtune",
        {"kbit_prep": False, "gradient_checkpointing": True, "checkpointing_variant": "non-reentrant",
         "optimizer": "adamw_fused", "loss_impl": "chunked", "loss_chunks": 8, "lora_rank": 8, "lora_alpha": 16.0,
         "lora_dropout": 0.0, "lora_dtype": "bf16",
         "lora_targets": ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")},
        ("recipes/configs/llama3_1/8B_qlora_single_device.yaml (lora_rank 8, alpha 16, dropout 0, q/v/output_proj "
         "+ MLP, AdamW fused, LinearCrossEntropyLoss, bf16, activation checkpointing on, offloading off)",
         "torchtune/modules/loss/cross_entropy_loss.py (num_output_chunks=8)"),
        ("torchao's NF4Tensor is planned with bitsandbytes' NF4 sizes (per-64 scalers quantized per 256, as double "
         "quant)",
         "torchtune trains in pure bf16 without autocast: the plan's autocast casts are not there",
         f"LinearCrossEntropyLoss projects chunk by chunk; {_CHUNKED_UPPER_BOUND}",
         "enable_activation_offloading (off in this config) is not modelled"),
    ),
}


def get_recipe(name: str) -> Recipe:
    return _RECIPES[name]


def recipe_knobs(name: str, stack: Stack) -> dict:
    """The RunConfig fields recipe `name` sets, with the Trainer's default optimizer resolved for `stack`."""
    knobs = dict(_RECIPES[name].knobs)
    if knobs.get("optimizer") == TRAINER_DEFAULT:
        knobs["optimizer"] = trainer_default_optimizer(stack["transformers"], stack["torch"])
    return knobs
