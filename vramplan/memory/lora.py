"""LoRA adapters: which linears a `target_modules` list selects, and their parameters.

peft matches a target name against the end of each module's qualified name;
`all-linear` selects every `nn.Linear` except the output layer (peft/tuners/tuners_utils.py,
`_maybe_include_all_linear_layers`). Each targeted linear gets A (r x in) and B (out x r)
(Hu et al. 2021, LoRA §4.1).
"""
from __future__ import annotations

from vramplan.errors import InputError
from vramplan.memory.parameters import TensorGroup
from vramplan.memory.terms import total
from vramplan.memory.weights import tensor_group_terms
from vramplan.specs.model import LinearShape, ModelSpec
from vramplan.specs.run import ALL_LINEAR

ATTENTION_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"})


def targeted_linears(model: ModelSpec, targets: tuple[str, ...], moe_experts: str = "linear") -> tuple[LinearShape, ...]:
    """The decoder-layer linears LoRA is attached to; unknown names are an InputError.

    With fused MoE experts (transformers >= 5) the experts and the router are not nn.Linear:
    `all-linear` reaches the attention projections only, and the 4.x names w1/w2/w3/gate are
    refused (peft's `target_parameters` LoRA on 3-D parameters is not modelled).
    """
    linears = model.layer_linears(moe_experts)
    if ALL_LINEAR in targets:
        return linears
    names = {lin.name for lin in linears}
    if model.is_moe and moe_experts == "fused":
        fused = [t for t in targets if t in {lin.name for lin in model.layer_linears("linear")} - names]
        if fused:
            raise InputError(
                "lora_targets",
                f"{', '.join(fused)} are not nn.Linear in transformers >= 5 (the experts are fused 3-D parameters, "
                f"the router a custom module); target {', '.join(sorted(names))} or all-linear, or use "
                "--moe-experts linear for transformers 4.x",
            )
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise InputError(
            "lora_targets",
            f"{', '.join(unknown)} not in {model.name}; allowed: {', '.join(sorted(names))} or all-linear",
        )
    return tuple(lin for lin in linears if lin.name in targets)


def lora_tensor_groups(model: ModelSpec, targets: tuple[str, ...], rank, moe_experts: str = "linear") -> list[TensorGroup]:
    """A and B of every targeted linear as tensor groups (rank may be a numpy array)."""
    layers = model.num_hidden_layers
    groups = []
    for lin in targeted_linears(model, targets, moe_experts):
        groups.append(TensorGroup(f"{lin.name}.lora_A", rank, lin.in_features, lin.count * layers))
        groups.append(TensorGroup(f"{lin.name}.lora_B", lin.out_features, rank, lin.count * layers))
    return groups


def lora_parameter_count(model: ModelSpec, targets: tuple[str, ...], rank, moe_experts: str = "linear"):
    """r x (in + out) summed over targeted linears and layers."""
    return sum(g.rows * g.cols * g.count for g in lora_tensor_groups(model, targets, rank, moe_experts))


def lora_adapter_bytes(model: ModelSpec, targets: tuple[str, ...], rank, bytes_per_param: int,
                       moe_experts: str = "linear"):
    """Adapter weights, each A and B its own allocation."""
    return total(tensor_group_terms(lora_tensor_groups(model, targets, rank, moe_experts), bytes_per_param))
