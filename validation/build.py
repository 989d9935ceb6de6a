"""Build the real Hugging Face architecture for a case, the way a user's run would have it.

The config, parameter dtype, LoRA targets, fallback LoRA wrapping and checkpointing are `vramplan.simulate.hf_build`'s,
the simulator's own. The model is created on the meta device (`AutoModelForCausalLM.from_config`, no hub, random
weights: memory depends on shapes, not values) and materialised one top-level module at a
time on the target device; each decoder layer is quantized to NF4 (our quantizer, our Triton
dequant kernel) with LoRA on the targets right after it is materialised, so the load peak is
one float layer above the quantized model. Then the k-bit preparation a user applies
(`vramplan.torch_nf4.inject.prepare_for_kbit_training`: fp32 embeddings/norms/lm_head, gradient
checkpointing non-reentrant when asked), peft LoRA on a float base, or full fine-tuning.
"""
from __future__ import annotations

import torch
from torch import nn

from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.optimizers import get_optimizer, optimizer_class
from vramplan.simulate.hf_build import TORCH_DTYPES, add_lora, enable_checkpointing, lora_target_names, parameter_dtype
from vramplan.simulate.hf_build import hf_config as shared_hf_config
from vramplan.specs import GPUSpec, ModelSpec, RunConfig

__all__ = ["TORCH_DTYPES", "UnsupportedCase", "build_model", "hf_config", "make_optimizer"]
QUANT_TYPES = {"nf4": "nf4", "fp4": "fp4"}


class UnsupportedCase(Exception):
    """The harness cannot build this case (recorded as status=error with the reason)."""


def hf_config(spec: ModelSpec):
    """The simulator's transformers config of the spec (`vramplan.simulate.hf_build.hf_config`), for what
    the harness can build: MoE experts are fused 3-D parameters in transformers 5, not nn.Linear."""
    if spec.is_moe:
        raise UnsupportedCase("MoE experts are not nn.Linear in transformers 5; the harness quantizes nn.Linear only")
    try:
        return shared_hf_config(spec)
    except InputError as exc:
        raise UnsupportedCase(str(exc)) from None


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


def build_model(spec: ModelSpec, run: RunConfig, gpu: GPUSpec, device: torch.device) -> nn.Module:
    """The prepared model for `run` on `device`: quantized/LoRA/full/inference as asked."""
    from transformers import AutoModelForCausalLM

    dtypes = resolve_dtypes(run, gpu, spec)
    if dtypes.base_quantized and dtypes.weight_format not in QUANT_TYPES:
        raise UnsupportedCase(f"weight format {dtypes.weight_format}: the harness quantizes nf4/fp4 only")
    config = hf_config(spec)
    dtype = parameter_dtype(run, dtypes)
    lora_names = lora_target_names(spec, run, dtypes)
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
            _quantize_layer(module, run, dtypes, lora_names)
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
        return _attach_lora(model, run, dtypes, lora_names)
    model.requires_grad_(True)
    if run.gradient_checkpointing:
        enable_checkpointing(model)
    return model.train()


def _quantize_layer(layer: nn.Module, run: RunConfig, dtypes, lora_names: tuple[str, ...]) -> None:
    from vramplan.torch_nf4.inject import quantize_model_to_nf4_lora

    lora = run.method == "qlora"
    quantize_model_to_nf4_lora(
        layer,
        target_modules=lora_names if lora else (),
        rank=run.lora_rank if lora else 0,
        alpha=run.resolved_lora_alpha,
        dropout=run.lora_dropout,
        blocksize=run.quant_blocksize,
        double_quant=run.double_quant,
        compute_dtype=TORCH_DTYPES[dtypes.compute],
        quant_type=QUANT_TYPES[dtypes.weight_format],
        lora_dtype=TORCH_DTYPES[dtypes.lora],
    )


def _prepare_qlora(model: nn.Module, run: RunConfig) -> nn.Module:
    from vramplan.torch_nf4.inject import prepare_for_kbit_training

    checkpointing = {"use_reentrant": False}
    if run.kbit_prep == "norms":
        raise ValueError("validation builds full or no k-bit preparation; norms-only is planned, not measured")
    if run.kbit_prep:
        prepare_for_kbit_training(model, use_gradient_checkpointing=run.gradient_checkpointing,
                                  gradient_checkpointing_kwargs=checkpointing)
    else:
        for name, param in model.named_parameters():
            param.requires_grad_(".lora_A." in name or ".lora_B." in name)
        if run.gradient_checkpointing:
            enable_checkpointing(model)
    return model.train()


def _attach_lora(model: nn.Module, run: RunConfig, dtypes, lora_names: tuple[str, ...]) -> nn.Module:
    """LoRA on a float base: peft when importable (what users run), else `hf_build.add_lora`."""
    if run.gradient_checkpointing:
        enable_checkpointing(model)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        add_lora(model, run, dtypes, lora_names)
        return model.train()
    config = LoraConfig(r=run.lora_rank, lora_alpha=run.resolved_lora_alpha, lora_dropout=run.lora_dropout,
                        target_modules=list(lora_names), bias="none", task_type="CAUSAL_LM")
    # peft keeps adapters in fp32 over a bf16/fp16 base (autocast_adapter_dtype=True)
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=dtypes.lora == "fp32")
    if dtypes.lora != "fp32":
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(TORCH_DTYPES[dtypes.lora])
    return peft_model.train()


def make_optimizer(name: str, params):
    """The optimizer a RunConfig names: its registry entry's library class and keyword arguments
    (bitsandbytes' classes need the caller to have checked that bitsandbytes imports)."""
    entry = get_optimizer(name)
    return optimizer_class(entry)(params, lr=1e-4, **dict(entry.class_kwargs))


def bitsandbytes_missing() -> str:
    """Why bitsandbytes' optimizers cannot run here ('' when they can)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"bitsandbytes not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return ""
