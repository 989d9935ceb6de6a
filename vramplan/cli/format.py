"""Plain-text formatting shared by the commands: sizes in GiB, aligned tables."""
from __future__ import annotations

GIB = 2**30

COMPONENT_LABELS = {
    "quantized_weights": "quantized weights (packed codes)",
    "quant_state": "quantization state (absmax, maps)",
    "float_weights": "float weights (embeddings, norms, ...)",
    "lora_adapters": "LoRA adapters",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "optimizer_step_temp": "optimizer step temporaries",
    "activations": "activations",
    "logits_loss": "logits + loss",
    "kv_cache": "KV cache",
    "cublas_workspace": "cuBLAS workspace",
    "allocator_reserve": "allocator reserve (reserved - allocated)",
    "cuda_context": "CUDA context (outside PyTorch)",
}


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f}"


def table(header: list[str], rows: list[list[str]], align_right_from: int = 1) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row):
        cells = [str(cell).rjust(w) if i >= align_right_from else str(cell).ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def describe_run(plan) -> str:
    """One line that says what was planned."""
    run = plan.run
    parts = [run.method]
    if run.method == "qlora":
        parts.append(f"{plan.weight_format}{' + double quant' if run.double_quant and plan.weight_format in ('nf4', 'fp4') else ''}")
    elif plan.weight_format not in (plan.compute_dtype,):
        parts.append(f"{plan.weight_format} weights")
    parts.append(f"{plan.compute_dtype} compute")
    parts.append(f"batch {run.micro_batch_size} x seq {run.seq_len}")
    if run.grad_accum_steps > 1:
        parts.append(f"accum {run.grad_accum_steps}")
    if run.uses_lora:
        parts.append(f"LoRA r={run.lora_rank} on {','.join(run.lora_targets)}")
    if run.trains:
        parts.append(run.optimizer)
        parts.append("gradient checkpointing" if run.gradient_checkpointing else "no checkpointing")
        parts.append(run.attention)
    else:
        parts.append(f"+{run.max_new_tokens} new tokens")
    return ", ".join(parts)
