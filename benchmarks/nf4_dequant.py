"""NF4 dequant to bf16: the bundled Triton kernel against the memory roofline and bitsandbytes.

    python benchmarks/nf4_dequant.py --out results.json      # on a CUDA GPU
    python benchmarks/nf4_dequant.py --smoke --out smoke.json  # CPU, Triton interpreter, tiny shapes (CI)

Bytes moved per element (double quant): 0.5 packed + 1/blocksize absmax codes
+ 4/(256*blocksize) nested absmax read, 2 written (bf16). GB/s = bytes / time; the roofline is
a large device-to-device copy measured in the same run (`torch.empty_like(x).copy_(x)`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

GPU_SHAPES = [(4096, 4096), (4096, 14336), (8192, 28672)]
SMOKE_SHAPES = [(64, 96), (33, 130)]


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results as JSON to this path")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1 (CI)")
    parser.add_argument("--blocksize", type=int, default=64)
    parser.add_argument("--no-double-quant", action="store_true")
    parser.add_argument("--iters", type=int, default=50)
    return parser.parse_args(argv)


def _time_s(fn, iters: int, device: str) -> float:
    """Median seconds per call (CUDA events on GPU, perf_counter on CPU), after one warm-up call."""
    import torch

    fn()
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _copy_bandwidth(device: str, iters: int) -> float:
    """Bytes/s of a large device copy (read + write) — the practical roofline."""
    import torch

    x = torch.empty(2**28 if device == "cuda" else 2**22, dtype=torch.uint8, device=device)
    seconds = _time_s(lambda: torch.empty_like(x).copy_(x), iters, device)
    return 2 * x.numel() / seconds


def _environment(device: str) -> dict:
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        env["bitsandbytes"] = None
    if device == "cuda":
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.CalledProcessError):
            env["driver"] = None
        env["cuda"] = torch.version.cuda
    else:
        env["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
    return env


def _bnb_dequant(weight, blocksize: int, double_quant: bool, device: str):
    """bitsandbytes' dequant closure for the same weight (CUDA only: its CPU kernel is a different code)."""
    if device != "cuda":
        return None
    try:
        import bitsandbytes.functional as bnb_functional
    except ImportError:
        return None
    ref_packed, ref_state = bnb_functional.quantize_4bit(
        weight, blocksize=blocksize, compress_statistics=double_quant, quant_type="nf4"
    )
    return lambda: bnb_functional.dequantize_4bit(ref_packed, ref_state)


def run(args) -> dict:
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported
    import torch

    from vramplan.torch_nf4 import dequantize_4bit_torch, quantize_4bit
    from vramplan.torch_nf4.dequantize_triton import dequantize_4bit_triton

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --smoke for the CPU interpreter check")
    double_quant = not args.no_double_quant
    iters = 2 if args.smoke else args.iters
    copy_bytes_per_s = _copy_bandwidth(device, iters)

    rows = []
    for shape in SMOKE_SHAPES if args.smoke else GPU_SHAPES:
        torch.manual_seed(0)
        weight = torch.randn(shape, dtype=torch.bfloat16, device=device)
        packed, state = quantize_4bit(weight, args.blocksize, "nf4", double_quant)
        out = dequantize_4bit_triton(packed, state, torch.bfloat16)
        exact = bool(torch.equal(out.cpu(), dequantize_4bit_torch(packed.cpu(), state.to("cpu"), torch.bfloat16)))
        seconds = _time_s(lambda: dequantize_4bit_triton(packed, state, torch.bfloat16), iters, device)
        moved = packed.numel() + sum(t.numel() * t.element_size() for t in state.tensors().values()) + out.numel() * 2
        row = {
            "shape": list(shape),
            "us": seconds * 1e6,
            "gb_per_s": moved / seconds / 1e9,
            "pct_of_copy": 100 * moved / seconds / copy_bytes_per_s,
            "bit_exact_vs_torch_reference": exact,
        }
        bnb = _bnb_dequant(weight, args.blocksize, double_quant, device)
        if bnb is not None:
            row["bnb_us"] = _time_s(bnb, iters, device) * 1e6
            row["speedup_vs_bnb"] = row["bnb_us"] / row["us"]
            row["bit_exact_vs_bnb"] = bool(torch.equal(out, bnb()))
        rows.append(row)
        del weight, packed, state, out
    return {
        "benchmark": "nf4_dequant_to_bf16",
        "mode": "smoke" if args.smoke else "gpu",
        "blocksize": args.blocksize,
        "double_quant": double_quant,
        "copy_gb_per_s": copy_bytes_per_s / 1e9,
        "environment": _environment(device),
        "rows": rows,
    }


def _print_table(result: dict) -> None:
    env = result["environment"]
    print(f"{env['device']} | torch {env['torch']} | triton {env['triton']} | bitsandbytes {env['bitsandbytes']}")
    print(f"copy roofline: {result['copy_gb_per_s']:.1f} GB/s ({result['mode']} mode)")
    print(f"{'shape':>14} {'us':>10} {'GB/s':>9} {'% copy':>7} {'bnb us':>10} {'speedup':>8} {'exact':>6}")
    for row in result["rows"]:
        shape = "x".join(map(str, row["shape"]))
        bnb_us = f"{row['bnb_us']:.1f}" if "bnb_us" in row else "-"
        speedup = f"{row['speedup_vs_bnb']:.2f}x" if "speedup_vs_bnb" in row else "-"
        exact = row.get("bit_exact_vs_bnb", row["bit_exact_vs_torch_reference"])
        print(f"{shape:>14} {row['us']:>10.1f} {row['gb_per_s']:>9.2f} {row['pct_of_copy']:>6.1f}% {bnb_us:>10} {speedup:>8} {exact!s:>6}")


def main(argv=None) -> int:
    args = _parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
    result = run(args)
    _print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(row.get("bit_exact_vs_bnb", row["bit_exact_vs_torch_reference"]) for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
