"""NF4 dequant to bf16: the bundled Triton kernel against the memory roofline and bitsandbytes;
and the fused NF4 matmul (dequant tile in registers, then tl.dot) against dequant-then-matmul.

    python benchmarks/nf4_dequant.py --out results.json      # on a CUDA GPU: both sections
    python benchmarks/nf4_dequant.py --section matmul        # only the fused-vs-unfused matmul
    python benchmarks/nf4_dequant.py --smoke --out smoke.json  # CPU, Triton interpreter, tiny shapes (CI)

Matmul section: for Llama-shaped weights W [out N, in K] (4096x4096 q/o, 14336x4096 gate/up,
4096x14336 down) and M tokens, forward y = x @ W.T and backward grad_x = g @ W, each three ways
in the same run: "fused" (vramplan.torch_nf4.matmul_triton, autotuned), "dequant_matmul" (the
Triton dequant kernel to bf16, then torch's matmul: the current default of matmul_4bit), "bf16"
(torch's matmul on an unquantized bf16 weight, the baseline). Times are medians of
triton.testing.do_bench, which flushes L2 before each call, so weights come from HBM. TFLOP/s =
2*M*N*K / time; for M <= 16 (memory bound) also GB/s over the bytes each path must move: fused
reads the 4-bit weight + x and writes y; dequant_matmul also writes and re-reads W in bf16
(+4 B/element); bf16 reads W (2 B/element). "winner" is the faster of fused and dequant_matmul:
it decides `vramplan.torch_nf4.linear.MATMUL_BACKEND`.

Bytes moved per element (double quant): 0.5 packed + 1/blocksize absmax codes
+ 4/(256*blocksize) nested absmax read, 2 written (bf16). GB/s = bytes / time; the roofline is
a large device-to-device copy measured in the same run (`torch.empty_like(x).copy_(x)`).

Exactness, two separate questions: the KERNEL is checked on bitsandbytes' own quantized data
(bnb's packed codes, absmax and nested state, loaded into our QuantState and dequantized by our
kernel, against bnb's dequantize_4bit of the same data): a mismatch there exits 1. Our QUANTIZER
is compared with bnb's as agreement figures (share of equal packed bytes, absmax codes, nested
absmax): bnb's CUDA double quantization picks some second-level codes differently from its own
CPU rule (about 0.14% of blocks, shared/NOTES.md), so a figure under 1.0 is reported, not failed.
The JSON is rewritten after every row, so a run stopped by a timeout keeps what it measured.
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
# Rows a multiple of the blocksize: bitsandbytes' native CPU dequant (the smoke reference) is
# wrong when blocks straddle rows (tests/nf4/_bnb.py); an odd row count still leaves a partial program.
SMOKE_SHAPES = [(64, 128), (33, 192)]
MATMUL_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]  # W [out, in]: q/o proj, gate/up, down
MATMUL_TOKENS = (1, 16, 512, 4096)
SMOKE_MATMUL_SHAPES = [(64, 128), (96, 192)]
SMOKE_MATMUL_TOKENS = (1, 17)
MATMUL_PATHS = ("fused", "dequant_matmul", "bf16")


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results as JSON to this path")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1 (CI)")
    parser.add_argument("--blocksize", type=int, default=64)
    parser.add_argument("--no-double-quant", action="store_true")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--section", choices=("all", "dequant", "matmul"), default="all", help="which part to run")
    parser.add_argument(
        "--tokens", type=lambda s: tuple(int(v) for v in s.split(",")), help="matmul token counts M (default 1,16,512,4096)"
    )
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


def _bnb_quantized(weight, blocksize: int, double_quant: bool):
    """bitsandbytes' own NF4 quantization of `weight` on its device, as (packed, quant_state),
    or None when bitsandbytes is missing."""
    try:
        import bitsandbytes.functional as bnb_functional
    except ImportError:
        return None
    return bnb_functional.quantize_4bit(weight, blocksize=blocksize, compress_statistics=double_quant,
                                        quant_type="nf4")


def _share_equal(a, b) -> float:
    """Share of equal elements of two tensors of one shape (0.0 when the shapes differ)."""
    if a.shape != b.shape:
        return 0.0
    return float((a.reshape(-1) == b.reshape(-1)).float().mean()) if a.numel() else 1.0


def quantizer_agreement(packed, state, bnb_packed, bnb_state) -> dict:
    """How often our quantizer wrote what bitsandbytes wrote for the same weight: share of equal
    packed bytes, first-level absmax entries (uint8 codes when nested), nested absmax; offset equal."""
    agreement = {"packed": _share_equal(packed.view(-1), bnb_packed.view(-1)),
                 "absmax": _share_equal(state.absmax, bnb_state.absmax)}
    if state.nested and bnb_state.nested:
        agreement["nested_absmax"] = _share_equal(state.nested_absmax, bnb_state.state2.absmax)
        agreement["offset_equal"] = bool(float(state.offset) == float(bnb_state.offset))
    return agreement


def check_kernel_on_bnb_data(bnb_packed, bnb_state, dtype) -> bool:
    """Our kernel on bitsandbytes' own packed codes and quant state (loaded through the checkpoint
    format both share) against bitsandbytes' dequant of the same data: the same bits or not."""
    import torch
    import bitsandbytes.functional as bnb_functional

    from vramplan.torch_nf4 import QuantState
    from vramplan.torch_nf4.dequantize_triton import dequantize_4bit_triton

    state = QuantState.from_dict({"weight." + k: v for k, v in bnb_state.as_dict(packed=True).items()},
                                 device=bnb_packed.device)
    ours = dequantize_4bit_triton(bnb_packed, state, dtype)
    return bool(torch.equal(ours, bnb_functional.dequantize_4bit(bnb_packed, bnb_state).to(dtype)))


def exit_code(result: dict) -> int:
    """1 when a kernel is wrong (on bitsandbytes' data where it ran, else against our torch
    reference) or the fused matmul disagrees; quantizer agreement is a figure, never a failure."""
    kernel_ok = all(row.get("kernel_bit_exact_on_bnb_data", row["bit_exact_vs_torch_reference"])
                    and row["bit_exact_vs_torch_reference"] for row in result["rows"])
    return 0 if kernel_ok and all(row["fused_matches"] for row in result["matmul_rows"]) else 1


def _bnb_row(row: dict, weight, packed, state, args, double_quant: bool, device: str, iters: int) -> None:
    """bitsandbytes' columns of one dequant row: its time, the kernel check on its data, and the
    quantizer agreement (nothing when bitsandbytes is missing)."""
    quantized = _bnb_quantized(weight, args.blocksize, double_quant)
    if quantized is None:
        return
    import bitsandbytes.functional as bnb_functional
    import torch

    bnb_packed, bnb_state = quantized
    row["bnb_us"] = _time_s(lambda: bnb_functional.dequantize_4bit(bnb_packed, bnb_state), iters, device) * 1e6
    row["speedup_vs_bnb"] = row["bnb_us"] / row["us"]
    row["quantizer_agreement_vs_bnb"] = quantizer_agreement(packed, state, bnb_packed, bnb_state)
    if device == "cpu" and weight.shape[-1] % args.blocksize:
        row["kernel_check_on_bnb_data"] = "skipped: bitsandbytes' CPU dequant is wrong when blocks straddle rows"
        return
    row["kernel_bit_exact_on_bnb_data"] = check_kernel_on_bnb_data(bnb_packed, bnb_state, torch.bfloat16)


def run(args, emit=None) -> dict:
    """Both sections; `emit(result)` (if given) is called after every row with the result so far."""
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

    result = {
        "benchmark": "nf4_dequant_to_bf16",
        "mode": "smoke" if args.smoke else "gpu",
        "blocksize": args.blocksize,
        "double_quant": double_quant,
        "copy_gb_per_s": copy_bytes_per_s / 1e9,
        "environment": _environment(device),
        "rows": [],
        "matmul_rows": [],
        "matmul_summary": _matmul_summary([]),
    }

    def row_done() -> None:
        result["matmul_summary"] = _matmul_summary(result["matmul_rows"])
        if emit is not None:
            emit(result)

    for shape in (SMOKE_SHAPES if args.smoke else GPU_SHAPES) if args.section != "matmul" else []:
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
        _bnb_row(row, weight, packed, state, args, double_quant, device, iters)
        result["rows"].append(row)
        row_done()
        del weight, packed, state, out
    if args.section != "dequant":
        run_matmul(args, device, double_quant, copy_bytes_per_s, result["matmul_rows"], row_done)
    return result


def _bench_us(fn, device: str, iters: int) -> float:
    """Median microseconds per call: do_bench on GPU (L2 flushed before each call), else perf_counter."""
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
    return _time_s(fn, iters, device) * 1e6


def _matmul_fns(x, g, packed, state, w_bf16) -> dict:
    """{direction: {path: callable}} for one weight and one token count."""
    import torch.nn.functional as F

    from vramplan.torch_nf4.dequantize_triton import dequantize_4bit_triton
    from vramplan.torch_nf4.matmul_triton import linear_4bit_triton, matmul_4bit_triton

    dtype = x.dtype
    return {
        "forward": {
            "fused": lambda: linear_4bit_triton(x, packed, state),
            "dequant_matmul": lambda: F.linear(x, dequantize_4bit_triton(packed, state, dtype)),
            "bf16": lambda: F.linear(x, w_bf16),
        },
        "backward": {
            "fused": lambda: matmul_4bit_triton(g, packed, state),
            "dequant_matmul": lambda: g @ dequantize_4bit_triton(packed, state, dtype),
            "bf16": lambda: g @ w_bf16,
        },
    }


def _bnb_matmul(weight, x, blocksize: int, double_quant: bool, device: str):
    """bitsandbytes' 4-bit forward (its gemv kernel at M=1) for the same weight (CUDA only)."""
    quantized = _bnb_quantized(weight, blocksize, double_quant) if device == "cuda" else None
    if quantized is None:
        return None
    import bitsandbytes as bnb

    packed, state = quantized
    return lambda: bnb.matmul_4bit(x, packed.t(), quant_state=state)


def run_matmul(args, device: str, double_quant: bool, copy_bytes_per_s: float, rows: list | None = None,
               row_done=None) -> list[dict]:
    """Fused vs dequant-then-matmul vs bf16 matmul, forward and backward, per weight shape and M;
    each row is appended to `rows` and `row_done()` called as soon as it is measured."""
    import torch

    from vramplan.torch_nf4 import quantize_4bit
    from vramplan.torch_nf4.dequantize_triton import dequantize_4bit_triton

    dtype = torch.bfloat16
    shapes = SMOKE_MATMUL_SHAPES if args.smoke else MATMUL_SHAPES
    tokens = args.tokens or (SMOKE_MATMUL_TOKENS if args.smoke else MATMUL_TOKENS)
    iters = 2 if args.smoke else args.iters
    rows = [] if rows is None else rows
    for n, k in shapes:
        torch.manual_seed(0)
        weight = torch.randn(n, k, dtype=dtype, device=device)
        packed, state = quantize_4bit(weight, args.blocksize, "nf4", double_quant)
        quant_bytes = packed.numel() + sum(t.numel() * t.element_size() for t in state.tensors().values())
        w_bf16 = dequantize_4bit_triton(packed, state, dtype)  # the unquantized baseline: a dense bf16 weight
        for m in tokens:
            x = torch.randn(m, k, dtype=dtype, device=device)
            g = torch.randn(m, n, dtype=dtype, device=device)
            for direction, fns in _matmul_fns(x, g, packed, state, w_bf16).items():
                out_elems, in_elems = (m * n, m * k) if direction == "forward" else (m * k, m * n)
                io_bytes = 2 * (out_elems + in_elems)
                moved = {"fused": quant_bytes + io_bytes, "dequant_matmul": quant_bytes + 4 * n * k + io_bytes,
                         "bf16": 2 * n * k + io_bytes}  # fmt: skip
                fused_out, reference = fns["fused"]().float(), fns["dequant_matmul"]().float()
                rel_err = float((fused_out - reference).norm() / reference.norm())
                row = {"direction": direction, "weight": [n, k], "tokens": m, "rel_err_fused_vs_dequant_matmul": rel_err,
                       "fused_matches": rel_err < 1e-2}  # fmt: skip
                for path, fn in fns.items():
                    us = _bench_us(fn, device, iters)
                    row[f"{path}_us"] = us
                    row[f"{path}_tflops"] = 2 * m * n * k / (us * 1e-6) / 1e12
                    if m <= 16:
                        row[f"{path}_gb_per_s"] = moved[path] / (us * 1e-6) / 1e9
                        row[f"{path}_pct_of_copy"] = 100 * moved[path] / (us * 1e-6) / copy_bytes_per_s
                if direction == "forward":
                    try:  # a reference point only: never let it stop the decision table
                        bnb = _bnb_matmul(weight, x, args.blocksize, double_quant, device)
                        if bnb is not None:
                            row["bnb_us"] = _bench_us(bnb, device, iters)
                    except Exception as error:  # noqa: BLE001
                        row["bnb_error"] = repr(error)[:200]
                row["winner"] = "fused" if row["fused_us"] < row["dequant_matmul_us"] else "dequant_matmul"
                row["fused_speedup_vs_dequant_matmul"] = row["dequant_matmul_us"] / row["fused_us"]
                row["fused_speedup_vs_bf16"] = row["bf16_us"] / row["fused_us"]
                rows.append(row)
                if row_done is not None:
                    row_done()
            del x, g
        del weight, packed, state, w_bf16
    return rows


def _matmul_summary(rows: list[dict]) -> dict:
    """Wins of the fused path per direction, and whether it wins everywhere (the default's criterion)."""
    summary = {}
    for direction in ("forward", "backward"):
        picked = [r for r in rows if r["direction"] == direction]
        wins = sum(r["winner"] == "fused" for r in picked)
        summary[direction] = {"fused_wins": wins, "cases": len(picked), "fused_wins_everywhere": bool(picked) and wins == len(picked)}
    return summary


def _print_table(result: dict) -> None:
    env = result["environment"]
    print(f"{env['device']} | torch {env['torch']} | triton {env['triton']} | bitsandbytes {env['bitsandbytes']}")
    print(f"copy roofline: {result['copy_gb_per_s']:.1f} GB/s ({result['mode']} mode)")
    if result["rows"]:
        _print_dequant_table(result)
    if result["matmul_rows"]:
        _print_matmul_table(result)


def _print_dequant_table(result: dict) -> None:
    print("kernel exact: our kernel on bitsandbytes' quantized data vs its dequant (else vs our torch reference); "
          "quantizer: share of absmax codes / packed bytes equal to bitsandbytes' (a figure, not a check)")
    print(f"{'shape':>14} {'us':>10} {'GB/s':>9} {'% copy':>7} {'bnb us':>10} {'speedup':>8} {'kernel exact':>12} "
          f"{'quantizer absmax/packed':>23}")
    for row in result["rows"]:
        shape = "x".join(map(str, row["shape"]))
        bnb_us = f"{row['bnb_us']:.1f}" if "bnb_us" in row else "-"
        speedup = f"{row['speedup_vs_bnb']:.2f}x" if "speedup_vs_bnb" in row else "-"
        exact = row.get("kernel_bit_exact_on_bnb_data", row["bit_exact_vs_torch_reference"])
        agreement = row.get("quantizer_agreement_vs_bnb")
        quantizer = f"{agreement['absmax']:.4%} / {agreement['packed']:.4%}" if agreement else "-"
        print(f"{shape:>14} {row['us']:>10.1f} {row['gb_per_s']:>9.2f} {row['pct_of_copy']:>6.1f}% {bnb_us:>10} "
              f"{speedup:>8} {exact!s:>12} {quantizer:>23}")


def _print_matmul_table(result: dict) -> None:
    print("\nfused NF4 matmul vs dequant+matmul vs bf16 matmul (us | TFLOP/s | GB/s where M <= 16)")
    print(f"{'dir':>4} {'weight NxK':>11} {'M':>5} {'fused us':>9} {'deq+mm us':>9} {'bf16 us':>9} {'bnb us':>8} "
          f"{'fused TF/s':>10} {'deq TF/s':>8} {'bf16 TF/s':>9} {'fused GB/s':>10} {'deq GB/s':>8} {'bf16 GB/s':>9} "
          f"{'vs deq':>7} {'winner':>14} {'relerr':>8}")  # fmt: skip
    for row in result["matmul_rows"]:
        weight = "x".join(map(str, row["weight"]))
        gbs = [f"{row[p + '_gb_per_s']:.0f}" if p + "_gb_per_s" in row else "-" for p in MATMUL_PATHS]
        bnb_us = f"{row['bnb_us']:.1f}" if "bnb_us" in row else "-"
        print(f"{'fwd' if row['direction'] == 'forward' else 'bwd':>4} {weight:>11} {row['tokens']:>5} {row['fused_us']:>9.1f} {row['dequant_matmul_us']:>9.1f} "
              f"{row['bf16_us']:>9.1f} {bnb_us:>8} {row['fused_tflops']:>10.2f} {row['dequant_matmul_tflops']:>8.2f} "
              f"{row['bf16_tflops']:>9.2f} {gbs[0]:>10} {gbs[1]:>8} {gbs[2]:>9} "
              f"{row['fused_speedup_vs_dequant_matmul']:>6.2f}x {row['winner']:>14} {row['rel_err_fused_vs_dequant_matmul']:>8.1e}")  # fmt: skip
    for direction, s in result["matmul_summary"].items():
        print(f"{direction}: fused wins {s['fused_wins']}/{s['cases']}" + (" (everywhere)" if s["fused_wins_everywhere"] else ""))


def write_json(path: Path, result: dict) -> None:
    """Replace `path` with `result` in one rename, so a kill mid-write never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(path)


def main(argv=None) -> int:
    args = _parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
    result = run(args, emit=(lambda partial: write_json(args.out, partial)) if args.out else None)
    _print_table(result)
    if args.out:
        write_json(args.out, result)
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
