"""RunConfig: every knob of a fine-tuning or inference run that changes memory.

Defaults follow the QLoRA paper and the peft/transformers recipes: NF4 with double
quantization, LoRA on all linear layers, gradient checkpointing, bf16 compute where the
GPU has it (fp16 on T4/V100: `resolved_compute_dtype` decides once the GPU is known).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Callable, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from vramplan.optimizers import optimizer_names
from vramplan.specs.bounds import RUN_BOUNDS, bound_validators

Method = Literal["qlora", "lora", "full", "inference"]
WeightFormat = Literal[
    "nf4", "fp4", "int8", "fp16", "bf16", "fp32",
    "gptq-4bit", "gptq-8bit", "awq-4bit",
    "gguf-q4_0", "gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k", "gguf-q8_0",
]
FloatDtype = Literal["bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class OneOf:
    """Field metadata: the allowed values are a registry's names, read each time they are asked for
    (the validator, `--help` choices, the TUI's select), so an entry registered later is allowed."""

    names: Callable[[], tuple[str, ...]]

    def __call__(self, value: str) -> str:
        allowed = self.names()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value


_OPTIMIZERS = OneOf(optimizer_names)
Optimizer = Annotated[str, _OPTIMIZERS, AfterValidator(_OPTIMIZERS)]  # vramplan/optimizers.py's entries
Attention = Literal["sdpa", "flash_attention_2", "eager"]
LossImpl = Literal["standard", "chunked"]
FullPrecision = Literal["mixed", "pure"]
KVCacheDtype = Literal["auto", "bf16", "fp16", "fp32", "fp8"]
MoEExperts = Literal["fused", "linear"]
CheckpointingVariant = Literal["auto", "non-reentrant", "reentrant"]
Recipe = Literal["hf-trainer", "trl-sft", "llama-factory", "unsloth", "axolotl", "torchtune"]
# True: peft prepare_model_for_kbit_training (every non-quantized fp16/bf16 parameter to fp32);
# "norms": only the norms to fp32 (the QLoRA paper's qlora.py); False: nothing, all stays in the load dtype.
KbitPrep = bool | Literal["norms"]

ALL_LINEAR = "all-linear"


class RunConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method = "qlora"
    weight_format: WeightFormat | None = Field(
        default=None, description="None: nf4 for qlora, the compute dtype otherwise")
    double_quant: bool = True
    quant_blocksize: int = Field(default=64, description="NF4/FP4 block size, a power of two 32..4096")
    group_size: int = Field(default=128, gt=0, description="GPTQ/AWQ group size")
    compute_dtype: FloatDtype | None = Field(default=None, description="None: bf16 if the GPU has it, else fp16")
    kbit_prep: KbitPrep = Field(
        default=True,
        description="peft prepare_model_for_kbit_training (full: non-quantized params to fp32), norms "
                    "(only the norms to fp32, as the QLoRA paper's qlora.py), or none")
    lora_rank: int = Field(default=16, gt=0)
    lora_alpha: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="None: 2 x rank")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: tuple[str, ...] = (ALL_LINEAR,)
    lora_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    optimizer: Optimizer = "adamw"
    micro_batch_size: int = Field(default=1, gt=0)
    grad_accum_steps: int = Field(default=1, gt=0)
    seq_len: int = Field(default=512, gt=0)
    gradient_checkpointing: bool = True
    checkpointing_variant: CheckpointingVariant = Field(
        default="auto", description="torch.utils.checkpoint use_reentrant; auto: the stack's transformers default "
                                    "(non-reentrant from 5.0, reentrant in 4.x)")
    attention: Attention = "sdpa"
    loss_impl: LossImpl = "standard"
    loss_chunks: int = Field(default=8, gt=0)
    full_precision: FullPrecision = Field(
        default="mixed", description="full fine-tuning: fp32 master weights + autocast, or pure compute dtype")
    max_new_tokens: int = Field(default=256, ge=0)
    kv_cache_dtype: KVCacheDtype = "auto"
    moe_experts: MoEExperts = Field(
        default="fused",
        description="transformers >= 5 keeps MoE experts as fused 3-D parameters, which bitsandbytes does not "
                    "quantize and LoRA target names cannot reach; \"linear\" is transformers 4.x's one nn.Linear "
                    "per expert")
    fragmentation: float = Field(default=0.05, ge=0, lt=1, description="allocator reserve over the allocated peak")
    stack: str = Field(
        default="auto", description="library versions: auto (installed ones, read from package metadata; missing: "
                                    "current releases), current, or pkg=ver,... (transformers, peft, bitsandbytes, "
                                    "torch, trl, unsloth)")
    recipe: Recipe | None = Field(
        default=None, description="a framework's settings for the knobs not given: " + ", ".join(Recipe.__args__))

    _not_bool, _within_bounds = bound_validators(RUN_BOUNDS)  # bools refused, each field at most its bound

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data):
        """A recipe fills the fields not given with its framework's values (vramplan.stack.recipes)."""
        if isinstance(data, dict) and data.get("recipe") in Recipe.__args__:
            from vramplan.errors import InputError
            from vramplan.stack.profile import resolve_stack
            from vramplan.stack.recipes import recipe_knobs

            try:
                stack = resolve_stack(data.get("stack") or "auto")
            except InputError:
                return data  # the stack field's own validator names the problem
            data = {**recipe_knobs(data["recipe"], stack), **{k: v for k, v in data.items() if v is not None}}
        return data

    @field_validator("stack")
    @classmethod
    def _known_stack(cls, value: str) -> str:
        from vramplan.errors import InputError
        from vramplan.stack.profile import check_stack_text

        try:
            return check_stack_text(value)
        except InputError as exc:
            raise ValueError(exc.message) from None

    @field_validator("kbit_prep", mode="before")
    @classmethod
    def _kbit_prep_words(cls, value):
        """The words of `field_words`: full (True), norms, none (False)."""
        return {"full": True, "none": False}.get(value, value) if isinstance(value, str) else value

    @field_validator("quant_blocksize")
    @classmethod
    def _power_of_two_block(cls, value: int) -> int:
        if value < 32 or value > 4096 or value & (value - 1):
            raise ValueError("must be a power of two from 32 to 4096 (bitsandbytes' range)")
        return value

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _split_targets(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        parts = tuple(part for part in value if part)
        if not parts:
            raise ValueError("give at least one module name, or 'all-linear'")
        return parts

    @property
    def trains(self) -> bool:
        return self.method != "inference"

    @property
    def uses_lora(self) -> bool:
        return self.method in ("qlora", "lora")

    @property
    def resolved_lora_alpha(self) -> float:
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank

    def resolved_compute_dtype(self, gpu_has_bf16: bool) -> FloatDtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        return "bf16" if gpu_has_bf16 else "fp16"

    def resolved_weight_format(self, compute_dtype: str, stored_format: str = "") -> str:
        """The format asked for; else a pre-quantized checkpoint's own (qlora, inference); else the default."""
        if self.weight_format is not None:
            return self.weight_format
        if stored_format and self.method in ("qlora", "inference"):
            return stored_format
        if self.method == "qlora":
            return "nf4"
        if self.method == "full" and self.full_precision == "mixed":
            return "fp32"
        return compute_dtype


def field_words(name: str) -> tuple[str, ...] | None:
    """The words a `bool | Literal[...]` field is set with (kbit_prep: full, norms, none), else None."""
    choices = field_choices(name)
    if choices and bool in typing.get_args(RunConfig.model_fields[name].annotation):
        return ("full", *choices, "none")
    return None


def field_word(name: str, value) -> str:
    """`value` of a `field_words` field as its word: True -> full, False -> none, a choice as itself."""
    return {True: "full", False: "none"}.get(value, value) if isinstance(value, bool) else str(value)


def field_choices(name: str) -> tuple[str, ...] | None:
    """The values RunConfig field `name` allows when they are a closed set (a Literal, or a registry's
    names), else None; `| None` is not among them."""
    field = RunConfig.model_fields[name]
    for meta in field.metadata:
        if isinstance(meta, OneOf):
            return meta.names()
    annotation = field.annotation
    literals = [arg for arg in (typing.get_args(annotation) or ()) if typing.get_origin(arg) is Literal]
    if typing.get_origin(annotation) is Literal:
        literals = [annotation]
    return tuple(typing.get_args(literals[0])) if literals else None
