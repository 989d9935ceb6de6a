"""Behaviours that change memory across library versions: one small rule per behaviour, keyed by
version range, each citing the library file (and release) it was read from.

`stack_behaviour` turns a Stack and a run into the `StackBehaviour` the memory functions read
(`RunDtypes.stack`); the memory model itself keeps the formulas (vramplan/memory/logits.py,
vramplan/memory/bnb_autograd.py, vramplan/memory/activations.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vramplan.stack.profile import Stack

LossUpcast = str  # "model_forward" | "loss_shifted_copy" | "loss"


def causal_lm_loss_upcast(transformers) -> LossUpcast:
    """Where transformers' causal-LM loss upcasts the logits to fp32, and what it copies.

    - < 4.46: `LlamaForCausalLM.forward` runs `logits = logits.float()` and then
      `shift_logits = logits[..., :-1, :].contiguous()` (models/llama/modeling_llama.py, 4.44/4.45):
      the compute-dtype logits are freed, the fp32 logits and their shifted fp32 copy both live.
    - 4.46 - 4.48: the upcast moved into `ForCausalLMLoss` (loss/loss_utils.py, 4.46), which still makes
      the contiguous shifted fp32 copy, while the model's output keeps the compute-dtype logits.
    - >= 4.49: `ForCausalLMLoss` pads the labels instead of shifting the logits (PR #35646, "remove
      unnecessary contiguous()", first released in 4.49; 5.x the same): no shifted copy.
    """
    if transformers < "4.46":
        return "model_forward"
    if transformers < "4.49":
        return "loss_shifted_copy"
    return "loss"


def bnb_4bit_keeps_matmul_inputs(bitsandbytes) -> bool:
    """bitsandbytes < 0.43.2 keeps every 4-bit matmul input on the autograd node.

    `MatMul4Bit.forward` ran `ctx.tensors = (A, B)` (bitsandbytes/autograd/_functions.py, 0.43.1) although
    its backward never uses A (no weight gradient for a 4-bit weight); a ctx attribute is invisible to
    non-reentrant checkpointing's saved-tensor hooks, so every layer's input stays alive. Commit 9e75374
    ("fix QLoRA mem bug: delete useless buffered activation", #1270), first tagged 0.43.2, saves
    `(None, B)`.
    """
    return bitsandbytes < "0.43.2"


def default_checkpoint_reentrant(transformers) -> bool:
    """The checkpointing variant transformers picks when `gradient_checkpointing_kwargs` is not given.

    4.35 - 4.57: `{"use_reentrant": True}` (modeling_utils.py `gradient_checkpointing_enable`, PR #28538);
    5.x: `{"use_reentrant": False}` (PR #43203, merged 2026-01-09; modeling_utils.py
    `_activation_checkpointing_enable`, 5.24).
    """
    return transformers < "5"


def fsdp_loads_on_rank0_only(transformers) -> bool:
    """Whether, with accelerate's fsdp_cpu_ram_efficient_loading, only local rank 0 reads the
    checkpoint into host RAM while `from_pretrained` runs.

    4.x: yes - `is_fsdp_enabled()` turns on low_cpu_mem_usage and ranks other than local rank 0
    build the model on meta (modeling_utils.py `from_pretrained`, `is_local_dist_rank_0`, 4.57).
    5.x: no - every rank loads the checkpoint, and accelerate moves ranks > 0 to meta only when it
    prepares the FSDP model (benchmarks/checkpoint_load_rss.py on 5.24 under torchrun with
    ACCELERATE_USE_FSDP=1 FSDP_CPU_RAM_EFFICIENT_LOADING=1: both ranks hold the weights; 5.0-5.23
    assumed alike).
    """
    return transformers < "5"


def checkpoint_stays_mapped(transformers) -> bool:
    """Whether weights loaded in the checkpoint's own dtype stay views of the mmap'd safetensors file
    (page cache: one copy per node, shared by every process that loads it) instead of anonymous copies.

    5.x: yes - benchmarks/checkpoint_load_rss.py on 5.24: a 509 MiB bf16 checkpoint loaded as bf16
    grows each of 2 ranks' RssFile by 602 MiB and RssAnon by 141 MiB (the imports); loaded as fp32
    (a conversion) RssAnon grows by 1143 MiB per rank. 4.x: no - `_load_state_dict_into_meta_model`
    copies every tensor into the model's parameters (modeling_utils.py, 4.57).
    """
    return transformers >= "5"


def trainer_default_optimizer(transformers, torch) -> str:
    """The HF Trainer's `optim` default: "adamw_torch_fused" with torch >= 2.8 (training_args.py, 5.24;
    PR #37358, merged 2025-07, first in 4.54), else "adamw_torch" (torch's AdamW, foreach)."""
    if transformers >= "4.54" and torch >= "2.8":
        return "adamw_fused"
    return "adamw"


def bnb_load_dtype(transformers) -> str:
    """The dtype a bitsandbytes model's float parameters and 4-bit `quant_state.dtype` get when
    `from_pretrained` is not told one: transformers 4.x overrides `torch_dtype=None` with fp16 for
    bitsandbytes ("Overriding torch_dtype=None with torch_dtype=torch.float16 due to requirements of
    bitsandbytes", quantizers/quantizer_bnb_4bit.py `update_torch_dtype`); 5.x loads `dtype="auto"`, the
    checkpoint's own dtype, planned as the compute dtype. "" means: the compute dtype."""
    return "fp16" if transformers < "5" else ""


@dataclass(frozen=True)
class StackBehaviour:
    """What the memory functions need to know about the stack, resolved once per plan."""

    loss_upcast: LossUpcast = "loss"
    bnb_4bit_keeps_inputs: bool = False
    checkpoint_reentrant: bool = False
    load_dtype: str = ""  # "" = the compute dtype
    stack: tuple = ()  # Stack.as_dict() items, for the plan's output (a tuple: RunDtypes stays hashable)


CURRENT_BEHAVIOUR = StackBehaviour()


def stack_behaviour(stack: Stack, run) -> StackBehaviour:
    """The behaviour of `run` under `stack`; RunConfig.checkpointing_variant overrides the library default."""
    return _behaviour(stack, getattr(run, "checkpointing_variant", "auto"))


@lru_cache(maxsize=64)  # solvers plan one run many times
def _behaviour(stack: Stack, variant: str) -> StackBehaviour:
    reentrant = default_checkpoint_reentrant(stack["transformers"]) if variant == "auto" else variant == "reentrant"
    return StackBehaviour(
        loss_upcast=causal_lm_loss_upcast(stack["transformers"]),
        bnb_4bit_keeps_inputs=bnb_4bit_keeps_matmul_inputs(stack["bitsandbytes"]),
        checkpoint_reentrant=reentrant,
        load_dtype=bnb_load_dtype(stack["transformers"]),
        stack=tuple(stack.as_dict().items()),
    )
