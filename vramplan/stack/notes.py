"""What a plan says about its stack: the line `fit` prints first and the notes on rules and recipes."""
from __future__ import annotations

from vramplan.stack.recipes import get_recipe
from vramplan.stack.rules import StackBehaviour

_SHOWN = ("transformers", "peft", "bitsandbytes", "torch", "trl", "unsloth")


def stack_data(run, behaviour: StackBehaviour) -> dict:
    """The plan's `stack` object: versions and their source, the recipe, and what the rules decided."""
    data = dict(behaviour.stack)
    data.update(recipe=run.recipe or "", loss_upcast=behaviour.loss_upcast,
                checkpointing="reentrant" if behaviour.checkpoint_reentrant else "non-reentrant",
                bnb_4bit_keeps_inputs=behaviour.bnb_4bit_keeps_inputs, load_dtype=behaviour.load_dtype or "compute")
    return data


def stack_line(stack: dict) -> str:
    """'transformers 5.24, peft 0.21, bitsandbytes 0.50, torch 2.13 (current releases)' (+ recipe)."""
    if not stack:
        return ""
    versions = ", ".join(f"{name} {stack[name]}" for name in _SHOWN if name in stack)
    recipe = f", recipe {stack['recipe']}" if stack.get("recipe") else ""
    return f"{versions} ({stack.get('source', '')}{recipe})"


def stack_notes(run, dtypes) -> list[str]:
    """Notes on the rules that differ from the current stack, and on what a recipe sets that the plan does not model."""
    behaviour = dtypes.stack
    notes = []
    if run.trains and run.loss_impl == "standard":
        if behaviour.loss_upcast == "model_forward":
            notes.append("transformers < 4.46 upcasts the logits in the model's forward and shifts a contiguous "
                         "fp32 copy: 12 B/token/vocab in the loss forward")
        elif behaviour.loss_upcast == "loss_shifted_copy":
            notes.append("transformers 4.46-4.48's ForCausalLMLoss shifts a contiguous fp32 copy of the logits: "
                         "C + 12 B/token/vocab in the loss forward (4.49 dropped the copy)")
    if run.trains and dtypes.weight_format in ("nf4", "fp4") and behaviour.bnb_4bit_keeps_inputs:
        notes.append("bitsandbytes < 0.43.2 keeps every 4-bit matmul input on ctx (fixed in 0.43.2)"
                     + ("; non-reentrant checkpointing cannot free them" if run.gradient_checkpointing
                        and not behaviour.checkpoint_reentrant else ""))
    if run.trains and dtypes.weight_format == "int8":
        notes.append("int8 (MatMul8bitLt) keeps each linear's input on ctx and copies the whole weight in backward")
    if dtypes.weight_format in ("nf4", "fp4") and behaviour.load_dtype and behaviour.load_dtype != dtypes.compute:
        notes.append(f"transformers 4.x loads bitsandbytes models in {behaviour.load_dtype} unless from_pretrained "
                     f"gets torch_dtype: each dequantized weight is made in {behaviour.load_dtype}, then cast to "
                     f"{dtypes.compute}")
    if run.recipe:
        notes.extend(f"{run.recipe}: {text}" for text in get_recipe(run.recipe).not_modelled)
    return notes
