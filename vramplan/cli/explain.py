"""`vramplan explain`: every component at the peak with its formula and the numbers plugged in.

Formulas are read from the docstrings of the memory functions that compute them, so the
text cannot drift from the code; the numbers come from the same functions and the plan.
"""
from __future__ import annotations

import argparse
import json

from vramplan.cli.format import COMPONENT_LABELS, describe_run, gib

HELP = "explain each component of the plan: its formula and the numbers plugged in"
EPILOG = """examples:
  vramplan explain --model 13b --gpu t4
  vramplan explain --model llama-3.1-8b --gpu a10g --seq 4096 --loss-impl chunked
  vramplan explain --model 7b --gpu a100-80g --method inference --json"""


def add_parser(subparsers) -> None:
    from vramplan.cli.fit import add_model_gpu_arguments
    from vramplan.cli.run_flags import add_run_arguments

    parser = subparsers.add_parser("explain", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_gpu_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the components as JSON")
    add_run_arguments(parser)


def formula_of(obj, key: str | None = None) -> str:
    """The docstring clause of `obj` that starts at `key` (to the next ';' or sentence end), else its first line."""
    doc = " ".join((obj.__doc__ or "").split())
    clause = doc[doc.index(key):] if key and key in doc else doc
    depth = 0
    for index, char in enumerate(clause):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and (char == ";" or char == "." and clause[index + 1:index + 2] in (" ", "")):
            return clause[:index]
    return clause


def _count(groups) -> int:
    return sum(group.count for group in groups)


def explain_components(model, gpu, run, breakdown) -> list[dict]:
    """[{component, label, bytes, formula, numbers}] for every non-zero component at the peak."""
    from vramplan.memory import activations, kv_cache, logits, lora, optimizer, overhead, parameters, weights
    from vramplan.memory.dtypes import DTYPE_BYTES, resolve_dtypes

    dtypes = resolve_dtypes(run, gpu, model)
    fmt = dtypes.weight_format
    b = breakdown
    batch, seq, layers = run.micro_batch_size, run.seq_len, model.num_hidden_layers
    tokens = batch * seq
    layout = dtypes.moe_experts
    linears = parameters.linear_weight_groups(model, layout)
    n_linears = _count(linears)
    linear_params = parameters.count_elements(linears)
    out = {}

    if fmt in ("nf4", "fp4"):
        blocks = sum(-(-g.numel // run.quant_blocksize) * g.count for g in linears)
        out["quantized_weights"] = (
            formula_of(weights.nf4_state_tensor_bytes, "packed ="),
            f"Σ ceil(n/2) over {n_linears} linears ({linear_params / 1e9:.2f}B weights), 512 B-rounded")
        dq = "uint8 + nested fp32 per 256 blocks + maps" if run.double_quant else "fp32"
        out["quant_state"] = (
            formula_of(weights.nf4_state_tensor_bytes, "absmax ="),
            f"{blocks:,} blocks of {run.quant_blocksize} over {n_linears} linears, absmax {dq}")
    elif fmt == "int8":
        out["quantized_weights"] = (formula_of(weights.int8_tensor_bytes),
                                    f"{linear_params / 1e9:.2f}B weights x 1 B over {n_linears} linears")
        out["quant_state"] = (formula_of(weights.int8_tensor_bytes, "one fp32"), "one fp32 scale per output row")
    elif fmt.startswith(("gptq-", "awq-")):
        func = weights.gptq_tensor_bytes if fmt.startswith("gptq-") else weights.awq_tensor_bytes
        out["quantized_weights"] = (formula_of(func, "qweight"), f"{n_linears} linears, {linear_params / 1e9:.2f}B weights")
        out["quant_state"] = (formula_of(func, "qzeros"), f"group size {run.group_size}")
    elif fmt.startswith("gguf-"):
        out["quantized_weights"] = (formula_of(weights.gguf_tensor_type),
                                    f"{fmt}: ceil(n / block elements) x block bytes over {n_linears} linears + embeddings")

    float_groups = (parameters.unquantized_groups(model, layout) if dtypes.base_quantized
                    else parameters.all_parameter_groups(model, layout))
    float_bytes = 4 if fmt.startswith("gguf-") else DTYPE_BYTES[dtypes.float_weights]
    out["float_weights"] = (
        formula_of(parameters.unquantized_groups) if dtypes.base_quantized
        else f"{formula_of(weights.tensor_group_bytes)}: every parameter",
        f"{parameters.count_elements(float_groups) / 1e9:.3f}B params x {float_bytes} B over "
        f"{_count(float_groups)} tensors")

    if run.uses_lora:
        targeted = lora.targeted_linears(model, run.lora_targets, layout)
        modules = sum(lin.count for lin in targeted) * layers
        params = lora.lora_parameter_count(model, run.lora_targets, run.lora_rank, layout)
        out["lora_adapters"] = (
            formula_of(lora.lora_parameter_count),
            f"r={run.lora_rank} x (in + out) over {modules} modules = {params / 1e6:.2f}M params "
            f"x {DTYPE_BYTES[dtypes.lora]} B ({dtypes.lora})")
    trainable_bytes = DTYPE_BYTES[dtypes.trainable]
    out["gradients"] = (
        formula_of(weights.tensor_group_bytes),
        f"{b.trainable_parameters / 1e6:.2f}M trainable params x {trainable_bytes} B ({dtypes.trainable})"
        f" at {b.peak_phase.replace('_', ' ')}")
    key = {"adamw": "adamw:", "adamw_fused": "adamw:", "paged_adamw": "32-bit bitsandbytes", "adamw_8bit": "8-bit:",
           "paged_adamw_8bit": "8-bit:", "sgd_momentum": "sgd_momentum", "adafactor": "adafactor"}.get(run.optimizer)
    paged = f"; {gib(b.paged_optimizer_bytes)} GiB more in CUDA managed memory" if b.paged_optimizer_bytes else ""
    out["optimizer_state"] = (formula_of(optimizer.optimizer_state_bytes, key),
                              f"{run.optimizer} over {b.trainable_parameters / 1e6:.2f}M trainable params{paged}")
    step_key = "adafactor loops" if run.optimizer == "adafactor" else "adamw (foreach"
    out["optimizer_step_temp"] = (formula_of(optimizer.optimizer_step_temp_bytes, step_key),
                                  f"{run.optimizer} over {b.trainable_parameters / 1e6:.2f}M trainable params")

    if run.trains:
        saved = sum(activations.saved_bytes_per_token(model, run, dtypes, seq).values())
        if run.gradient_checkpointing:
            kept = activations.checkpoint_bytes_per_token(model, dtypes)
            numbers = (f"checkpointing: {kept:,} B/token kept x {tokens:,} tokens (b {batch} x s {seq}) x {layers} layers"
                       f" (+ {saved:,} B/token for the layer recomputed in backward)")
            formula = formula_of(activations.checkpoint_bytes_per_token)
        else:
            numbers = f"{saved:,} B/token/layer x {tokens:,} tokens (b {batch} x s {seq}) x {layers} layers"
            formula = formula_of(activations.saved_bytes_per_token)
        out["activations"] = (formula, f"{numbers}, at {b.peak_phase.replace('_', ' ')}")
        phase_key = {"chunked": '"chunked"'}.get(run.loss_impl) or (
            "Backward peak per token" if b.peak_phase == "loss_backward" else "Forward peak per token")
        out["logits_loss"] = (formula_of(logits, phase_key),
                              f"b x s x V = {batch} x {seq} x {model.vocab_size:,} = {tokens * model.vocab_size / 1e6:,.1f}M "
                              f"logits, at {b.peak_phase.replace('_', ' ')}")
    else:
        out["activations"] = (formula_of(activations.inference_transient_per_token),
                              f"{activations.inference_transient_per_token(model, dtypes):,} B/token x {tokens:,} prompt tokens")
        out["logits_loss"] = (formula_of(logits.inference_logits_bytes), f"b {batch} x V {model.vocab_size:,} x (C + 4) B")
        total = seq + run.max_new_tokens
        out["kv_cache"] = (formula_of(kv_cache, "bytes = 2"),
                           f"2 x {layers} layers x b {batch} x {total:,} tokens x {model.num_key_value_heads} kv heads "
                           f"x {model.head_dim} x {DTYPE_BYTES[dtypes.kv_cache]} B ({dtypes.kv_cache})")
    out["cublas_workspace"] = (formula_of(overhead, "cuBLAS workspace"), f"{gpu.name} profile: {b.cublas_workspace:,} B")
    out["allocator_reserve"] = (formula_of(overhead, "Allocator reserve"),
                                f"{run.fragmentation} x peak {gib(b.peak_allocated_bytes)} GiB")
    out["cuda_context"] = (formula_of(overhead, "CUDA context"), f"{gpu.name} profile: {b.cuda_context_bytes:,} B")

    rows = []
    for name, value in b.components().items():
        if not value:
            continue
        formula, numbers = out.get(name, ("", ""))
        rows.append({"component": name, "label": COMPONENT_LABELS[name], "bytes": value,
                     "formula": formula, "numbers": numbers})
    return rows


def run(args) -> int:
    from vramplan.cli.fit import specs_from_args
    from vramplan.estimate import plan

    model, gpu, run_config = specs_from_args(args)
    result = plan(model, gpu, run_config)
    rows = explain_components(model, gpu, run_config, result)
    if args.json:
        print(json.dumps({"model": model.name, "gpu": gpu.key, "fits": result.fits, "peak_phase": result.peak_phase,
                          "peak_allocated_bytes": result.peak_allocated_bytes,
                          "required_bytes": result.required_bytes, "capacity_bytes": result.capacity_bytes,
                          "components": rows}, indent=2))
        return 0 if result.fits else 1
    verdict = "FITS" if result.fits else "DOES NOT FIT"
    print(f"{model.name} on {gpu.name}: {describe_run(result)}")
    print(f"{verdict}: needs {gib(result.required_bytes)} of {gib(result.capacity_bytes)} GiB; "
          f"peak {gib(result.peak_allocated_bytes)} GiB during {result.peak_phase.replace('_', ' ')}")
    for row in rows:
        print()
        print(f"{row['label']} = {gib(row['bytes'])} GiB")
        if row["formula"]:
            print(f"    formula: {row['formula']}")
        if row["numbers"]:
            print(f"    here:    {row['numbers']} = {gib(row['bytes'])} GiB")
    return 0 if result.fits else 1
