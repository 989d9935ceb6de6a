"""llama.cpp's own buffer sizes vs vramplan's llama.cpp plan, on tiny GGUF models run on the CPU.

Writes tiny models with gguf-py (llama, qwen2, gemma2; f16, q8_0, q4_0; several contexts, slot counts,
KV types, mmap on and off), loads each with llama-cpp-python (built from source) in a fresh process,
keeps the log lines that report buffers, and compares them with the plan for -ngl 0:
"model buffer size", "KV buffer size", the KV cache line (cells, layers, K and V MiB), "output buffer
size" and "compute buffer size". llama.cpp prints MiB with two decimals, so those agree at that
resolution; the weight bytes are also checked exactly with llama_model_size(). The compute buffer is an
estimate and the table says how far off it is.

    pip install gguf llama-cpp-python   # compiles llama.cpp (CMAKE_ARGS="-DGGML_NATIVE=OFF")
    python benchmarks/llamacpp_agreement.py      # writes validation/llamacpp/agreement.json and logs/

The CI test tests/test_serve_llamacpp_logs.py re-parses the committed log excerpts and re-plans each
case without llama.cpp (tiny_llamacpp_model rebuilds the file's layout), so the figures stay checked.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from llamacpp_tiny_gguf import TinyModel, tiny_llamacpp_model, write_tiny_gguf  # noqa: E402

OUT = ROOT / "validation" / "llamacpp"
MIB = 2**20

# (case name, model, run settings); settings use llama.cpp's context-parameter names.
CASES = [
    ("llama-f16-ctx512", TinyModel("llama", weight_type="f16"), dict(n_ctx=512)),
    ("llama-f16-ctx2048-mmap-off", TinyModel("llama", weight_type="f16"), dict(n_ctx=2048, use_mmap=False)),
    ("llama-q8_0-ctx1000", TinyModel("llama", weight_type="q8_0"), dict(n_ctx=1000)),
    ("llama-q4_0-ctx4096-kvq8", TinyModel("llama", weight_type="q4_0", n_layer=6),
     dict(n_ctx=4096, type_k="q8_0", type_v="q8_0", flash_attn=True)),
    ("qwen2-q8_0-np4", TinyModel("qwen2", weight_type="q8_0", n_embd=384, n_head=6, n_head_kv=2, n_ff=1024),
     dict(n_ctx=4096, n_seq_max=4)),
    ("qwen2-f16-np3-unified", TinyModel("qwen2", weight_type="f16"), dict(n_ctx=3000, n_seq_max=3, kv_unified=True)),
    ("gemma2-f16-swa", TinyModel("gemma2", weight_type="f16", n_layer=6), dict(n_ctx=4096)),
    ("gemma2-q4_0-swa-fa-off", TinyModel("gemma2", weight_type="q4_0", n_layer=6), dict(n_ctx=2048, flash_attn=False)),
    ("llama-f16-ubatch128-fa-off", TinyModel("llama", weight_type="f16", n_vocab=2048), dict(n_ctx=2048, n_ubatch=128, flash_attn=False)),
]
DEFAULTS = dict(n_ctx=512, n_batch=2048, n_ubatch=512, n_seq_max=1, kv_unified=False, type_k="f16", type_v="f16",
                flash_attn=None, use_mmap=True, swa_full=True)  # swa_full: llama_context_default_params' value
GGML_TYPE = {"f16": 1, "q8_0": 8, "q4_0": 2, "f32": 0}

LINE = re.compile(r"(model buffer size|KV buffer size|output buffer size|compute buffer size|llama_kv_cache: size|"
                  r"KV cache, size|n_ctx |n_ctx_seq|llama_model_size_bytes)")


def load_in_this_process(model_path: str, settings: dict) -> None:
    """Load with llama-cpp-python's C API (verbose logs go to stderr) and print the exact model size."""
    import llama_cpp as ll

    mp = ll.llama_model_default_params()
    mp.n_gpu_layers = 0
    mp.use_extra_bufts = False  # no CPU_REPACK buffer: weights stay where the mmap/alloc rule puts them
    if hasattr(mp, "load_mode"):
        mp.load_mode = 1 if settings["use_mmap"] else 0
    else:
        mp.use_mmap = settings["use_mmap"]
    model = ll.llama_model_load_from_file(model_path.encode(), mp)
    cp = ll.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = settings["n_ctx"], settings["n_batch"], settings["n_ubatch"]
    cp.n_seq_max, cp.kv_unified = settings["n_seq_max"], settings["kv_unified"]
    cp.type_k, cp.type_v = GGML_TYPE[settings["type_k"]], GGML_TYPE[settings["type_v"]]
    cp.flash_attn_type = -1 if settings["flash_attn"] is None else int(settings["flash_attn"])
    cp.swa_full = settings["swa_full"]
    cp.n_threads = cp.n_threads_batch = 1
    ctx = ll.llama_init_from_model(model, cp)
    print(f"llama_model_size_bytes = {ll.llama_model_size(model)}", file=sys.stderr, flush=True)
    ll.llama_free(ctx)
    ll.llama_model_free(model)


def run_case(model_path: Path, settings: dict) -> list[str]:
    result = subprocess.run([sys.executable, __file__, "--load", str(model_path), json.dumps(settings)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"llama.cpp load failed:\n{result.stderr[-3000:]}")
    return [line.rstrip() for line in result.stderr.splitlines() if LINE.search(line)]


def parse_log(lines: list[str]) -> dict:
    """The figures a log excerpt reports: MiB per buffer kind and side, KV cells and the exact model size."""
    out: dict = {"model_mib": {}, "kv_mib": {}, "output_mib": {}, "compute_mib": {}, "kv_caches": []}
    kinds = {"model buffer size": "model_mib", "KV buffer size": "kv_mib", "output buffer size": "output_mib",
             "compute buffer size": "compute_mib"}
    for line in lines:
        for phrase, key in kinds.items():
            match = re.search(rf"(\S+)\s+{phrase} = +([0-9.]+) MiB", line)
            if match:
                out[key][match.group(1)] = out[key].get(match.group(1), 0.0) + float(match.group(2))
        match = re.search(r"llama_kv_cache: size = +([0-9.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
                          r"K \((\w+)\): +([0-9.]+) MiB, V \((\w+)\): +([0-9.]+) MiB", line)
        if match:
            g = match.groups()
            out["kv_caches"].append({"mib": float(g[0]), "cells": int(g[1]), "layers": int(g[2]), "seqs": int(g[3]),
                                     "streams": int(g[4]), "type_k": g[5], "k_mib": float(g[6]), "type_v": g[7],
                                     "v_mib": float(g[8])})
        match = re.search(r"llama_model_size_bytes = (\d+)", line)
        if match:
            out["model_size_bytes"] = int(match.group(1))
    return out


def plan_case(model: TinyModel, settings: dict) -> dict:
    """vramplan's figures for a case at -ngl 0 (all on the CPU), in bytes."""
    from vramplan.serve import llamacpp_rules as rules

    llm = tiny_llamacpp_model(model)
    flash = settings["flash_attn"] is not False
    kv = rules.kv_cache(llm, settings["n_ctx"], settings["n_seq_max"], settings["kv_unified"], settings["type_k"],
                        settings["type_v"], 0, True, min(settings["n_ubatch"], settings["n_batch"]),
                        settings["swa_full"])
    caches = []
    for cells, swa in ((kv["cells"], False), (kv["swa_cells"], True)):
        layers = [il for il in range(llm.n_layer) if llm.swa_layers[il] == swa]
        if not layers or (swa and not llm.n_swa):
            continue
        k = sum(rules.kv_layer_bytes(llm, il, cells, kv["streams"], settings["type_k"], settings["type_v"])[0] for il in layers)
        v = sum(rules.kv_layer_bytes(llm, il, cells, kv["streams"], settings["type_k"], settings["type_v"])[1] for il in layers)
        caches.append({"cells": cells, "layers": len(layers), "streams": kv["streams"], "k_bytes": k, "v_bytes": v})
    n_ubatch = min(settings["n_ubatch"], settings["n_batch"], rules.pad(settings["n_ctx"], rules.CTX_PAD))
    return {
        "model_bytes": rules.weight_buffers(llm, 0, settings["use_mmap"])["host"],
        "model_size_bytes": sum(t.nbytes for t in llm.tensors),
        "kv_bytes": kv["host"], "kv_caches": caches,
        "output_bytes": rules.output_buffer_bytes(llm, settings["n_seq_max"]),
        "compute_bytes": rules.compute_buffer_estimate(llm, kv["cells"], n_ubatch, settings["n_seq_max"], flash),
    }


def mib(nbytes: int) -> float:
    return round(nbytes / MIB, 2)


def compare(parsed: dict, planned: dict) -> dict:
    """Agreement of one case: exact where llama.cpp gives bytes, at the log's 0.01 MiB elsewhere."""
    cpu = lambda key: sum(parsed[key].values())  # noqa: E731  (tiny models: every buffer is on the CPU)
    kv_log = [(c["cells"], c["layers"], c["k_mib"], c["v_mib"]) for c in parsed["kv_caches"]]
    kv_plan = [(c["cells"], c["layers"], mib(c["k_bytes"]), mib(c["v_bytes"])) for c in planned["kv_caches"]]
    compute_log = cpu("compute_mib")
    return {
        "model_size_exact": parsed.get("model_size_bytes") == planned["model_size_bytes"],
        "model_buffer": {"log_mib": cpu("model_mib"), "plan_mib": mib(planned["model_bytes"]),
                         "agree": round(cpu("model_mib"), 2) == mib(planned["model_bytes"])},
        "kv_buffer": {"log_mib": cpu("kv_mib"), "plan_mib": mib(planned["kv_bytes"]),
                      "agree": round(cpu("kv_mib"), 2) == mib(planned["kv_bytes"])},
        "kv_caches": {"log": kv_log, "plan": kv_plan, "agree": sorted(kv_log) == sorted(kv_plan)},
        "output_buffer": {"log_mib": cpu("output_mib"), "plan_mib": mib(planned["output_bytes"]),
                          "agree": round(cpu("output_mib"), 2) == mib(planned["output_bytes"])},
        "compute_buffer": {"log_mib": compute_log, "plan_mib": mib(planned["compute_bytes"]),
                           "plan_over_log": round(planned["compute_bytes"] / MIB / compute_log, 3) if compute_log else None},
    }


def settings_of(overrides: dict) -> dict:
    return {**DEFAULTS, **overrides}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", nargs=2, metavar=("GGUF", "SETTINGS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_in_this_process(args.load[0], json.loads(args.load[1]))
        return 0
    import gguf
    import llama_cpp

    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, overrides in CASES:
            settings = settings_of(overrides)
            path = write_tiny_gguf(Path(tmp) / f"{name}.gguf", model)
            lines = run_case(path, settings)
            (OUT / "logs" / f"{name}.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
            result = compare(parse_log(lines), plan_case(model, settings))
            rows.append({"case": name, "model": asdict(model), "settings": settings, **result})
            print(name, json.dumps({k: v for k, v in result.items() if k != "kv_caches"}))
    record = {
        "command": "python benchmarks/llamacpp_agreement.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"llama_cpp_python": llama_cpp.__version__, "llama.cpp": "0c1e570 (vendored)",
                     "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"), "python": platform.python_version(),
                     "machine": platform.machine()},
        "note": "tiny models, -ngl 0, CPU build (GGML_NATIVE=OFF), use_extra_bufts=false; MiB as llama.cpp prints them",
        "cases": rows,
    }
    (OUT / "agreement.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
