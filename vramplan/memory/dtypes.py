"""Which dtype each tensor of a run is held in, decided once from model, run and GPU.

The rules follow what users run: transformers + peft + bitsandbytes under
`torch.autocast` (what the HF Trainer does with `bf16=True`):
- peft `prepare_model_for_kbit_training` casts every non-quantized fp16/bf16 parameter
  (embeddings, norms, lm_head, biases) to fp32, so the embedding output and with it the
  residual stream are fp32 (peft/utils/other.py).
- bitsandbytes `Linear4bit.forward` casts its input to the compute dtype and its output
  back to the input dtype (bitsandbytes/nn/modules.py), so quantized projections of an
  fp32 stream give fp32 outputs; plain `nn.Linear` under autocast gives compute dtype.
- peft creates LoRA adapters in fp32 (`autocast_adapter_dtype=True`).
- "norms" preparation (the QLoRA paper's qlora.py: `if 'norm' in name: module.to(torch.float32)`, embeddings
  and lm_head back to bf16) keeps only the norm weights fp32; `weight * hidden.to(input_dtype)` in
  LlamaRMSNorm then gives fp32 norm outputs, the quantized MLP returns fp32 (its input dtype) and the
  residual add promotes the stream to fp32 from the first MLP on: planned as an fp32 residual.
"""
from __future__ import annotations

from dataclasses import dataclass

from vramplan.errors import InputError
from vramplan.stack.rules import CURRENT_BEHAVIOUR, StackBehaviour

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}

QUANTIZED_FORMATS = frozenset({
    "nf4", "fp4", "int8", "gptq-4bit", "gptq-8bit", "awq-4bit",
    "gguf-q4_0", "gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k", "gguf-q8_0",
})
FLOAT_FORMATS = frozenset({"fp32", "bf16", "fp16"})
TRAINABLE_QUANTIZED = frozenset({"nf4", "fp4", "int8", "gptq-4bit", "gptq-8bit", "awq-4bit"})
# transformers' bitsandbytes integration replaces only nn.Linear/Conv1D (integrations/bitsandbytes.py,
# replace_with_bnb_linear), so fused 3-D MoE experts stay float under these formats.
BNB_FORMATS = frozenset({"nf4", "fp4", "int8"})


@dataclass(frozen=True)
class RunDtypes:
    """Resolved dtypes (names) and their byte sizes for one run on one GPU."""

    compute: str
    weight_format: str
    float_weights: str  # embeddings, norms, lm_head, biases (and all weights for 16/32-bit formats)
    residual: str  # the hidden-state stream between layers
    lora: str
    trainable: str  # parameters that get gradients and optimizer state
    kv_cache: str
    moe_experts: str = "linear"  # MoE layout in effect: "fused" 3-D experts or one nn.Linear per expert
    norms: str = ""  # norm weights when they differ from float_weights ("norms" k-bit preparation)
    stack: StackBehaviour = CURRENT_BEHAVIOUR  # what the library versions change (vramplan.stack.rules)

    @property
    def norm_weights(self) -> str:
        return self.norms or self.float_weights

    @property
    def base_quantized(self) -> bool:
        return self.weight_format in QUANTIZED_FORMATS

    def nbytes(self, which: str) -> int:
        return DTYPE_BYTES[getattr(self, which)]


def resolve_dtypes(run, gpu, model) -> RunDtypes:
    """Decide every dtype of `run` of `model` on `gpu`; refuse combinations that cannot run.

    `model` is required: a pre-quantized checkpoint (`model.stored_weight_format`, e.g.
    gptq-4bit) decides the weight format when the run does not, so resolving without it
    plans a different run. Resolve once per (run, gpu, model) and pass the result down.
    """
    compute = run.resolved_compute_dtype(gpu.bf16)
    if compute == "bf16" and not gpu.bf16:
        raise InputError("compute_dtype", f"{gpu.name} has no bf16 support; use fp16 or fp32")
    weight_format = run.resolved_weight_format(compute, getattr(model, "stored_weight_format", ""))
    if run.method == "qlora" and weight_format not in TRAINABLE_QUANTIZED:
        raise InputError(
            "weight_format",
            f"qlora trains on a quantized base: use one of {', '.join(sorted(TRAINABLE_QUANTIZED))} "
            f"(got {weight_format}; for a 16-bit base use --method lora)",
        )
    if run.method in ("lora", "full") and weight_format not in FLOAT_FORMATS:
        raise InputError(
            "weight_format",
            f"{run.method} needs fp32, bf16 or fp16 weights (got {weight_format}; "
            "for a quantized base use --method qlora)",
        )
    if weight_format == "bf16" and not gpu.bf16:
        raise InputError("weight_format", f"{gpu.name} has no bf16 support; use fp16")

    if run.method == "full":
        trainable = "fp32" if run.full_precision == "mixed" else compute
        float_weights = trainable
    elif run.method == "qlora" and run.kbit_prep is True:
        float_weights = "fp32"
        trainable = run.lora_dtype
    else:
        float_weights = weight_format if weight_format in FLOAT_FORMATS else compute
        trainable = run.lora_dtype
    # The embedding output keeps the embedding's dtype; under autocast nothing casts it back.
    residual = float_weights if DTYPE_BYTES[float_weights] >= DTYPE_BYTES[compute] else compute
    norms = ""
    if run.method == "qlora" and run.kbit_prep == "norms":
        norms = residual = "fp32"
    kv_cache = compute if run.kv_cache_dtype == "auto" else run.kv_cache_dtype
    if kv_cache == "fp8" and not gpu.fp8:
        raise InputError("kv_cache_dtype", f"{gpu.name} has no fp8 support; use auto, bf16 or fp16")
    # GPTQ/AWQ/GGUF runtimes quantize every expert themselves: plan them with per-expert linears.
    moe_experts = run.moe_experts if weight_format in BNB_FORMATS | FLOAT_FORMATS else "linear"
    from vramplan.stack.profile import resolve_stack
    from vramplan.stack.rules import stack_behaviour

    return RunDtypes(
        moe_experts=moe_experts,
        norms=norms,
        stack=stack_behaviour(resolve_stack(run.stack), run),
        compute=compute,
        weight_format=weight_format,
        float_weights=float_weights,
        residual=residual,
        lora=run.lora_dtype,
        trainable=trainable,
        kv_cache=kv_cache,
    )
