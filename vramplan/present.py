"""How every shell writes a plan: sizes in GiB, aligned tables, the run in one line, the flags that
reproduce it. The CLI, the TUI, the plots, the report and the validation harness all import this;
none of it imports argparse, Textual or matplotlib."""
from __future__ import annotations

import shlex

from vramplan.specs.run import RunConfig

GIB = 2**30

# Short, friendly flag names for the knobs people turn most; every RunConfig field also has its own.
SHORT_FLAGS = {
    "micro_batch_size": ("--batch", "-b"),
    "seq_len": ("--seq", "-s"),
    "lora_rank": ("--rank", "-r"),
    "lora_targets": ("--targets",),
    "grad_accum_steps": ("--accum",),
    "weight_format": ("--format",),
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


ROUNDING_TEXT = {"512 B blocks": " (each tensor rounded up to 512 B)", "floor": " (rounded down)"}


def term_arithmetic(item: dict) -> str:
    """A term's factors as the plan multiplied them: `2 tensors x 4,096 elements x 2 B`, and its rounding."""
    factors = item["factors"]
    if item["rounding"] == "shard":  # the whole, then / N ranks
        whole = " x ".join(f"{_number(value)} {unit}" for unit, value in factors[:-1])
        return f"{whole} / {_number(factors[-1][1])} {factors[-1][0]} (rounded up)"
    product = " x ".join(f"{_number(value)} {unit}" for unit, value in factors)
    return product + ROUNDING_TEXT.get(item["rounding"], "")


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def component_terms(gpu, run, breakdown) -> list[dict]:
    """[{component, label, bytes, terms}] for every non-zero component at the peak; the costs outside
    `max_memory_allocated` (allocator reserve, CUDA context) come last with their own one term."""
    from vramplan.components import label
    from vramplan.memory.overhead import overhead_terms
    from vramplan.memory.terms import as_dict

    terms = dict(breakdown.terms)
    for name, item in overhead_terms(breakdown.peak_allocated_bytes, run, gpu).items():
        terms[name] = (as_dict(item),)
    rows = []
    for name, value in breakdown.components().items():
        if value:
            rows.append({"component": name, "label": label(name), "bytes": value,
                         "terms": [item for item in terms.get(name, ()) if item["bytes"]]})
    return rows


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


def flag_name(field: str) -> str:
    """The long flag of a RunConfig field: `lora_rank` -> `--lora-rank`."""
    return "--" + field.replace("_", "-")


def command_line(model_text: str, gpu_text: str, run: RunConfig) -> str:
    """The `vramplan fit ...` line that plans `run`: flags only for fields off their default."""
    words = ["vramplan", "fit", "--model", model_text, "--gpu", gpu_text]
    for name, field in RunConfig.model_fields.items():
        value = getattr(run, name)
        if value == field.default:
            continue
        flag = SHORT_FLAGS.get(name, (flag_name(name),))[0]
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
    return shlex.join(words)
