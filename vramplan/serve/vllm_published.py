"""Published vLLM start-up logs (validation/published/serving/vllm_startup.toml) against the vLLM rules.

Each printed number is reproduced from the others with `vllm_rules` and the model's attention geometry:
blocks from the printed available memory (which vLLM rounds to 0.01 GiB, so a block count is "within
rounding" when it lies in the range those 0.01 GiB allow), tokens from blocks, the concurrency line, the
start-up error's GiB and estimated length; and, where the log prints weights and the GPU's total, the
blocks vramplan predicts from the specs alone (weights, activation and non-torch estimates).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from vramplan.serve import vllm_rules as rules

PUBLISHED_FILE = Path(__file__).resolve().parents[2] / "validation" / "published" / "serving" / "vllm_startup.toml"
HALF_CENT_GIB = 0.005 * rules.GIB  # vLLM prints GiB with 2 decimals


@dataclass(frozen=True)
class Check:
    run_id: str
    what: str
    printed: str
    reproduced: str
    status: str  # "exact", "within rounding" or "differs"
    why: str = ""


def load_runs(path: Path = PUBLISHED_FILE) -> list[dict]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)["run"]


def geometry(run: dict) -> tuple[int, int, int, int] | None:
    """(layers, KV heads per GPU, head_dim, KV dtype bytes): from the row, else from the catalog model."""
    dtype_bytes = 1 if run.get("kv_cache_dtype") == "fp8" else 2
    if "layers" in run:
        return run["layers"], run["kv_heads"], run["head_dim"], run.get("kv_dtype_bytes", dtype_bytes)
    if "catalog_model" in run:
        from vramplan.resolve import resolve_model

        model = resolve_model(run["catalog_model"])
        heads = rules.kv_heads_per_gpu(model.num_key_value_heads, run.get("tensor_parallel_size", 1))
        return model.num_hidden_layers, heads, model.head_dim, dtype_bytes
    return None


def full_layout(run: dict) -> rules.KVLayout | None:
    shape = geometry(run)
    if shape is None:
        return None
    layers, heads, head_dim, dtype_bytes = shape
    return rules.KVLayout(layers, 0, 0, rules.page_size_bytes(run.get("block_size", 16), heads, head_dim, dtype_bytes))


def printed_blocks(run: dict) -> int | None:
    if "num_gpu_blocks" in run:
        return run["num_gpu_blocks"]
    if "kv_cache_tokens" in run:
        return run["kv_cache_tokens"] // run.get("block_size", 16)
    return None


def _status(value: int, low: int, high: int) -> str:
    if low == high == value:
        return "exact"
    return "within rounding" if low <= value <= high else "differs"


def check_run(run: dict) -> list[Check]:
    found = []
    block_size = run.get("block_size", 16)
    layout = full_layout(run)
    blocks = printed_blocks(run)
    rid = run["id"]
    if layout and blocks is not None and "available_kv_gib" in run:
        middle = run["available_kv_gib"] * rules.GIB
        low = rules.num_gpu_blocks(math.ceil(middle - HALF_CENT_GIB), layout)
        high = rules.num_gpu_blocks(int(middle + HALF_CENT_GIB), layout)
        status = _status(blocks, low, high)
        why = ("not reproduced; the issue prints one rank's memory, and vLLM gives every rank the smallest "
               "rank's block count (kv_cache_utils.get_kv_cache_configs): a rank with ~1% less free memory would "
               "explain it, but the issue does not show the other ranks") if status == "differs" and run.get(
                   "tensor_parallel_size", 1) > 1 else ""
        found.append(Check(rid, "blocks from available memory", f"{blocks:,}", f"{low:,}..{high:,}", status, why))
    if "num_gpu_blocks" in run and "kv_cache_tokens" in run:
        tokens = run["num_gpu_blocks"] * block_size
        found.append(Check(rid, "tokens = blocks x block size", f"{run['kv_cache_tokens']:,}", f"{tokens:,}",
                           "exact" if tokens == run["kv_cache_tokens"] else "differs"))
    if "max_concurrency" in run and blocks is not None:
        length = run["max_model_len"]
        if run["engine"] == "V0":  # V0: num_gpu_blocks x block_size / max_model_len (vllm/executor/executor_base.py)
            value = blocks * block_size / length
        else:
            value = rules.max_concurrency(blocks, rules.KVLayout(1, 0, 0, 1), length, block_size, 0)
        found.append(Check(rid, f"maximum concurrency ({run['engine']})", f"{run['max_concurrency']:.2f}x",
                           f"{value:.2f}x", "exact" if f"{value:.2f}" == f"{run['max_concurrency']:.2f}" else "differs"))
    if layout and "error_needed_gib" in run:
        needed = rules.needed_kv_bytes(layout, run["max_model_len"], block_size, 0)
        found.append(Check(rid, "start-up error: GiB needed", f"{run['error_needed_gib']}",
                           f"{rules.format_gib(needed)}",
                           "exact" if rules.format_gib(needed) == run["error_needed_gib"] else "differs"))
        middle = run["error_available_gib"] * rules.GIB
        low, high = (rules.estimate_max_model_len(layout, int(edge), run["max_model_len"], block_size, 0)
                     for edge in (math.ceil(middle - HALF_CENT_GIB), middle + HALF_CENT_GIB))
        found.append(Check(rid, "start-up error: estimated max length", f"{run['error_estimated_max_len']:,}",
                           f"{low:,}..{high:,}", _status(run["error_estimated_max_len"], low, high)))
    if layout and blocks is not None and "total_gpu_gib" in run and "catalog_model" in run:
        predicted, parts = predicted_blocks(run, layout)
        error = (predicted - blocks) / blocks
        found.append(Check(rid, "blocks predicted from specs", f"{blocks:,}", f"{predicted:,} ({error:+.1%})",
                           "exact" if predicted == blocks else "differs", parts))
    return found


def predicted_blocks(run: dict, layout: rules.KVLayout) -> tuple[int, str]:
    """Blocks from the catalog model, the printed GPU total and the flags, with vramplan's weight bytes and
    its activation and non-torch estimates (what `vramplan serve` does without a log)."""
    from vramplan.gpus import custom_gpu
    from vramplan.resolve import resolve_model
    from vramplan.serve import vllm_estimates as estimates
    from vramplan.serve.vllm import weight_bytes

    model = resolve_model(run["catalog_model"])
    tp = run.get("tensor_parallel_size", 1)
    total = int(run["total_gpu_gib"] * rules.GIB)
    weights = rules.cdiv(weight_bytes(model, custom_gpu(total, "published"), "bf16", None), tp)
    activation = estimates.activation_peak_bytes(model, run["profiled_tokens"], run["max_num_seqs"], tp)
    non_torch = estimates.non_torch_bytes(tp)
    available = rules.available_kv_cache_bytes(rules.requested_memory_bytes(total, run["gpu_memory_utilization"]),
                                               weights, activation, non_torch)
    parts = (f"weights {weights / rules.GIB:.2f} vs {run['weights_gib']:.2f} GiB printed, activation "
             f"{activation / rules.GIB:.2f} vs {run['activation_peak_gib']:.2f}, non-torch {non_torch / rules.GIB:.2f}"
             f" vs {run['non_torch_gib']:.2f}")
    return rules.num_gpu_blocks(available, layout), parts


def all_checks(path: Path = PUBLISHED_FILE) -> list[Check]:
    return [check for run in load_runs(path) for check in check_run(run)]
