"""Each engine's headline figures for one model on one GPU: the row `vramplan compare --engine` prints
and the TUI's serving summary shows. Numbers come from the engine's own plan (`plan_from_args`); this
module only picks them out.
"""
from __future__ import annotations

from vramplan.errors import InputError

# Row fields per engine, in column order ("name" is the GPU or the model). hf keeps compare's inference row.
FIELDS = {
    "vllm": ("name", "starts", "kv_pool_bytes", "kv_cache_tokens", "max_model_len", "max_concurrency",
             "largest_max_model_len", "note"),
    "llama.cpp": ("name", "fits", "n_gpu_layers", "max_gpu_layers", "layers_total", "gpu_bytes", "host_bytes",
                  "max_ctx_size", "note"),
    "hf": ("name", "verdict", "peak_allocated_bytes", "required_bytes", "capacity_bytes", "headroom_bytes",
           "max_micro_batch", "max_seq_len", "context_window", "note"),
}


def headline(engine: str, plan) -> dict:
    """The headline figures of an engine's plan (a VllmPlan, LlamaCppPlan or HfPlan)."""
    if engine == "vllm":
        return {"starts": plan.fits, "kv_pool_bytes": plan.available_kv_bytes, "kv_cache_tokens": plan.kv_cache_tokens,
                "max_model_len": plan.max_model_len, "max_concurrency": plan.max_concurrency,
                "largest_max_model_len": plan.largest_max_model_len,
                "note": plan.startup_error.splitlines()[0] if plan.startup_error else None}
    if engine == "llama.cpp":
        p = plan.placement
        note = None if plan.fits else ("GPU" if not plan.fits_gpu else "host RAM") + " too small" + \
            (f"; {plan.advice[0]}" if plan.advice else "")
        return {"fits": plan.fits, "n_gpu_layers": p.n_gpu_layers, "max_gpu_layers": plan.max_gpu_layers,
                "layers_total": plan.n_layer + 1, "gpu_bytes": p.gpu_bytes, "host_bytes": p.host_bytes,
                "max_ctx_size": plan.max_ctx_size, "note": note}
    breakdown = plan.breakdown
    return {"verdict": breakdown.verdict, "peak_allocated_bytes": breakdown.peak_allocated_bytes,
            "required_bytes": breakdown.required_bytes, "capacity_bytes": breakdown.capacity_bytes,
            "headroom_bytes": breakdown.headroom_bytes, "note": breakdown.blocked_by}


def engine_row(engine: str, name: str, model, gpu, args) -> dict:
    """One row of `compare --engine`: the headline of `plan_from_args(model, gpu, args)`; a model/GPU the
    engine refuses before planning (an InputError) gives a row of blanks with the reason as its note."""
    from vramplan.cli.serve import engine_module

    try:
        plan = engine_module(engine).plan_from_args(model, gpu, args)
    except InputError as exc:
        return {field: None for field in FIELDS[engine]} | {"name": name, "note": str(exc), "error": exc}
    row = {"name": name, **headline(engine, plan)}
    if engine == "hf":
        from vramplan.solvers import max_micro_batch, max_seq_len

        run = plan.breakdown.run
        row |= {"max_micro_batch": max_micro_batch(model, gpu, run), "max_seq_len": max_seq_len(model, gpu, run),
                "context_window": model.max_position_embeddings}
    return {field: row.get(field) for field in FIELDS[engine]}


def engine_rows(engine: str, subjects, args) -> list[dict]:
    """`engine_row` for each (name, model, gpu); when every one is refused for the same reason (a bad flag
    value, not this model or GPU), that InputError is raised instead."""
    rows = [engine_row(engine, name, model, gpu, args) for name, model, gpu in subjects]
    errors = {str(row.get("error")) for row in rows}
    if rows and len(errors) == 1 and rows[0].get("error") is not None:
        raise rows[0]["error"]
    return [{field: row[field] for field in FIELDS[engine]} for row in rows]


def _yes_no(value) -> str:
    return "-" if value is None else "yes" if value else "NO"


def render_engine_rows(engine: str, first: str, rows: list[dict]) -> str:
    """The vllm or llama.cpp rows as a text table, notes under it."""
    from vramplan.present import gib, table

    def cell(value, fmt=str):
        return "-" if value is None else fmt(value)

    if engine == "vllm":
        header = [first, "starts", "KV pool GiB", "KV tokens", "max-model-len", "concurrency", "largest len"]
        body = [[row["name"], _yes_no(row["starts"]), cell(row["kv_pool_bytes"], gib), cell(row["kv_cache_tokens"]),
                 cell(row["max_model_len"]), cell(row["max_concurrency"], lambda c: f"{c:.2f}x"),
                 cell(row["largest_max_model_len"])] for row in rows]
    else:
        header = [first, "fits", "-ngl", "largest -ngl", "GPU GiB", "host GiB", "largest ctx"]
        body = [[row["name"], _yes_no(row["fits"]),
                 "-" if row["n_gpu_layers"] is None else f"{row['n_gpu_layers']}/{row['layers_total']}",
                 cell(row["max_gpu_layers"]), cell(row["gpu_bytes"], gib), cell(row["host_bytes"], gib),
                 cell(row["max_ctx_size"])] for row in rows]
    notes = [f"note: {row['name']}: {row['note']}" for row in rows if row["note"]]
    return "\n".join([table(header, body, align_right_from=2), *notes])
