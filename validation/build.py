"""Build the real Hugging Face architecture for a case, the way a user's run would have it.

The model is created on the meta device (`AutoModelForCausalLM.from_config`, no hub, random
weights: memory depends on shapes, not values) and materialised one top-level module at a
time on the target device; each decoder layer is quantized to NF4 (our quantizer, our Triton
dequant kernel) with LoRA on the targets right after it is materialised, so the load peak is
one float layer above the quantized model. Then the k-bit preparation a user applies
(`vramplan.torch_nf4.inject.prepare_for_kbit_training`: fp32 embeddings/norms/lm_head, gradient
checkpointing non-reentrant when asked), peft LoRA on a bf16 base, or full fine-tuning.
"""
from __future__ import annotations

import torch
from torch import nn

from vramplan.memory.dtypes import resolve_dtypes
from vramplan.specs import GPUSpec, ModelSpec, RunConfig

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANT_TYPES = {"nf4": "nf4", "fp4": "fp4"}


class UnsupportedCase(Exception):
    """The harness cannot build this case (recorded as status=error with the reason)."""


def hf_config(spec: ModelSpec, attention: str):
    """A transformers config with exactly the spec's shapes (no download)."""
    from transformers import AutoConfig

    if spec.is_moe:
        raise UnsupportedCase("MoE experts are not nn.Linear in transformers 5; the harness quantizes nn.Linear only")
    kwargs = dict(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings, pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )
    arch = spec.architecture
    if arch == "llama":
        kwargs.update(head_dim=spec.head_dim, attention_bias=spec.attention_bias)
    elif arch == "mistral":
        kwargs.update(head_dim=spec.head_dim, sliding_window=4096 if "v0.1" in spec.name else None)
    elif arch == "qwen2":
        kwargs.update(use_sliding_window=False)
    elif arch == "gemma2":
        kwargs.update(head_dim=spec.head_dim, query_pre_attn_scalar=spec.head_dim, sliding_window=4096,
                      attn_logit_softcapping=50.0,
                      final_logit_softcapping=30.0 if spec.final_logit_softcapping else None)
    elif arch != "phi3":
        raise UnsupportedCase(f"no transformers config mapping for architecture {arch!r}")
    if arch == "phi3" and spec.head_dim != spec.hidden_size // spec.num_attention_heads:
        raise UnsupportedCase("phi3 with a head_dim other than hidden/heads")
    return AutoConfig.for_model(arch, **kwargs)


def _chunks(model: nn.Module):
    """(parent, attribute, module, is_layer) for the modules that together hold every
    parameter: embeddings, each decoder layer, the final norm, rotary embedding, lm_head."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    for name, child in list(base.named_children()):
        if isinstance(child, nn.ModuleList):
            for index, layer in enumerate(child):
                yield child, str(index), layer, True
        else:
            yield base, name, child, False
    for name, child in list(model.named_children()):
        if child is not base:
            yield model, name, child, False


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def _materialize(model: nn.Module, module: nn.Module, device: torch.device) -> nn.Module:
    """`module` allocated on `device` and initialised as transformers would (random values)."""
    if "RotaryEmbedding" in type(module).__name__:
        try:  # a fresh one computes inv_freq for this config on the device
            return type(module)(config=model.config, device=device)
        except TypeError:
            pass
    module.to_empty(device=device, recurse=True)
    with torch.no_grad():
        for sub in module.modules():
            try:
                model._init_weights(sub)
            except Exception:  # an init scheme we do not know: any finite values will do
                for param in sub.parameters(recurse=False):
                    param.normal_(0.0, 0.02) if param.dim() > 1 else param.fill_(1.0)
    return module


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant gradient checkpointing (transformers 5.2x renamed it activation checkpointing)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _targets(run: RunConfig):
    return "all-linear" if run.lora_targets == ("all-linear",) else tuple(run.lora_targets)


def load_dtype(run: RunConfig, dtypes) -> torch.dtype:
    """The dtype the model is loaded in: the compute dtype for a quantized base (bnb loads it
    so), else the weight format."""
    if dtypes.base_quantized:
        return TORCH_DTYPES[dtypes.compute]
    return TORCH_DTYPES[dtypes.weight_format]


def build_model(spec: ModelSpec, run: RunConfig, gpu: GPUSpec, device: torch.device) -> nn.Module:
    """The prepared model for `run` on `device`: quantized/LoRA/full/inference as asked."""
    from transformers import AutoModelForCausalLM

    dtypes = resolve_dtypes(run, gpu, spec)
    if dtypes.base_quantized and dtypes.weight_format not in QUANT_TYPES:
        raise UnsupportedCase(f"weight format {dtypes.weight_format}: the harness quantizes nf4/fp4 only")
    config = hf_config(spec, run.attention)
    dtype = load_dtype(run, dtypes)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=run.attention)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype, attn_implementation=run.attention)

    quantize = dtypes.base_quantized
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    output_embeddings = model.get_output_embeddings()
    for parent, attribute, module, is_layer in list(_chunks(model)):
        if tied and module is output_embeddings:
            continue
        if _on_meta(module):
            module = _materialize(model, module, device)
            setattr(parent, attribute, module)
        if quantize and is_layer:
            _quantize_layer(module, run, dtypes)
    if tied:
        model.tie_weights()
        output_embeddings, input_embeddings = model.get_output_embeddings(), model.get_input_embeddings()
        if output_embeddings.weight is not input_embeddings.weight:  # one tensor, as the planner counts it
            output_embeddings.weight = input_embeddings.weight
    leftover = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:
        raise UnsupportedCase(f"still on the meta device after materialising: {', '.join(leftover[:3])}")
    model.config.use_cache = not run.trains
    if not run.trains:
        model.requires_grad_(False)
        return model.eval()
    if run.method == "qlora":
        return _prepare_qlora(model, run)
    if run.method == "lora":
        return _attach_lora(model, run)
    model.requires_grad_(True)
    if run.gradient_checkpointing:
        enable_checkpointing(model)
    return model.train()


def _quantize_layer(layer: nn.Module, run: RunConfig, dtypes) -> None:
    from vramplan.torch_nf4.inject import quantize_model_to_nf4_lora

    lora = run.method == "qlora"
    quantize_model_to_nf4_lora(
        layer,
        target_modules=_targets(run) if lora else (),
        rank=run.lora_rank if lora else 0,
        alpha=run.resolved_lora_alpha,
        dropout=run.lora_dropout,
        blocksize=run.quant_blocksize,
        double_quant=run.double_quant,
        compute_dtype=TORCH_DTYPES[dtypes.compute],
        quant_type=QUANT_TYPES[dtypes.weight_format],
        lora_dtype=TORCH_DTYPES[run.lora_dtype],
    )


def _prepare_qlora(model: nn.Module, run: RunConfig) -> nn.Module:
    from vramplan.torch_nf4.inject import prepare_for_kbit_training

    checkpointing = {"use_reentrant": False}
    if run.kbit_prep:
        prepare_for_kbit_training(model, use_gradient_checkpointing=run.gradient_checkpointing,
                                  gradient_checkpointing_kwargs=checkpointing)
    else:
        for name, param in model.named_parameters():
            param.requires_grad_(".lora_A." in name or ".lora_B." in name)
        if run.gradient_checkpointing:
            enable_checkpointing(model)
    return model.train()


def _attach_lora(model: nn.Module, run: RunConfig) -> nn.Module:
    """LoRA on a float base: peft when importable (what users run), else our LoraLinear."""
    if run.gradient_checkpointing:
        enable_checkpointing(model)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return _attach_own_lora(model, run)
    targets = _targets(run)
    config = LoraConfig(r=run.lora_rank, lora_alpha=run.resolved_lora_alpha, lora_dropout=run.lora_dropout,
                        target_modules=targets if targets == "all-linear" else list(targets),
                        bias="none", task_type="CAUSAL_LM")
    # peft keeps adapters in fp32 over a bf16/fp16 base (autocast_adapter_dtype=True)
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=run.lora_dtype == "fp32")
    if run.lora_dtype != "fp32":
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(TORCH_DTYPES[run.lora_dtype])
    return peft_model.train()


class LoraLinear(nn.Module):
    """peft's `lora.Linear` forward on a frozen nn.Linear (used when peft is absent)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, dtype: torch.dtype):
        super().__init__()
        self.base_layer = base
        device = base.weight.device
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=device, dtype=dtype)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank

    def forward(self, x):
        result = self.base_layer(x)
        lora_x = x.to(self.lora_A.weight.dtype)
        return result + (self.lora_B(self.lora_A(self.lora_dropout(lora_x))) * self.scaling).to(result.dtype)


def _attach_own_lora(model: nn.Module, run: RunConfig) -> nn.Module:
    model.requires_grad_(False)
    targets = _targets(run)
    output_embeddings = model.get_output_embeddings()
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not output_embeddings
             and (targets == "all-linear" or any(name == t or name.endswith("." + t) for t in targets))]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraLinear(getattr(parent, child), run.lora_rank, run.resolved_lora_alpha,
                                          run.lora_dropout, TORCH_DTYPES[run.lora_dtype]))
    return model.train()


def make_optimizer(name: str, params):
    """The optimizer a RunConfig names (torch AdamW foreach is torch's default on CUDA)."""
    lr = 1e-4
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, foreach=True)
    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    import bitsandbytes as bnb  # the caller checked that it imports

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw": bnb.optim.PagedAdamW,
            "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}[name](params, lr=lr)


BNB_OPTIMIZERS = frozenset({"adamw_8bit", "paged_adamw", "paged_adamw_8bit"})


def bitsandbytes_missing() -> str:
    """Why bitsandbytes' optimizers cannot run here ('' when they can)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"bitsandbytes not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return ""
