"""Fused 4-bit matmul: W tiles dequantized in registers, then `tl.dot` with fp32 accumulation.

    linear_4bit_triton(x, packed, state, bias)  y      = x @ dequant(W).T + bias   (forward)
    matmul_4bit_triton(g, packed, state)        grad_x = g @ dequant(W)           (backward)

W is a bitsandbytes-layout packed NF4/FP4 weight of shape [N, K] (K a multiple of a
power-of-two blocksize 32..256), with or without double quantization (the nested absmax is
decoded in the kernel). x / g are float16 or bfloat16 with any leading dims; the output has
their dtype. Both kernels read the same [BLOCK_N, BLOCK_K] tile of W (rows n, columns k):
the forward multiplies x by its transpose and loops over K; the backward multiplies g by it
and loops over N. A 2-D grid over output tiles, no split-K.

Every W element is the value `dequantize_4bit(packed, state, x.dtype)` gives (fp32
code * absmax with FMA contraction off, then one round-to-nearest-even to x's dtype), so the
fused result differs from dequantize-then-matmul only by fp32 summation order and the final
rounding. Under TRITON_INTERPRET=1 (CPU tests) two interpreter defects are routed around: its
fp32->bf16 cast truncates (we round by hand) and its `tl.dot` on bf16 operands returns garbage
(we feed it the same bf16 values held in fp32, whose products are exact). On GPU tiles are
autotuned; in the interpreter one small fixed tile is used so tests stay fast.

Unsupported inputs raise ValueError (`check_fused_supported`) so callers can fall back to the
dequantize-then-matmul path.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from vramplan.torch_nf4.dequantize import triton_usable
from vramplan.torch_nf4.state import QuantState

FUSED_BLOCKSIZES = (32, 64, 128, 256)
FUSED_DTYPES = (torch.float16, torch.bfloat16)
_OUT_KIND = {torch.float16: 1, torch.bfloat16: 2}
INTERPRETER_TILE = (16, 32, 64)  # (BLOCK_M, BLOCK_N, BLOCK_K): small, so CPU tests stay fast


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _round_bf16(v):
    """fp32 -> fp32 holding the nearest-even bfloat16 (the interpreter's cast truncates)."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _to_operand(v, OUT_KIND: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 tile -> a tl.dot operand holding values of the compute dtype."""
    if OUT_KIND == 1:
        return v.to(tl.float16)
    elif INTERPRET:
        return _round_bf16(v)  # stays fp32: the interpreter's bf16 dot is broken
    else:
        return v.to(tl.bfloat16)


@triton.jit
def _mma(a, b, acc, OUT_KIND: tl.constexpr, INTERPRET: tl.constexpr):
    if OUT_KIND == 2 and INTERPRET:
        return tl.dot(a.to(tl.float32), b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _store_out(ptrs, acc, mask, OUT_KIND: tl.constexpr, INTERPRET: tl.constexpr):
    if OUT_KIND == 1:
        tl.store(ptrs, acc.to(tl.float16), mask=mask)
    elif INTERPRET:
        tl.store(ptrs, _round_bf16(acc).to(tl.bfloat16), mask=mask)  # exact: already a bf16 value
    else:
        tl.store(ptrs, acc.to(tl.bfloat16), mask=mask)


@triton.jit
def _absmax(absmax_ptr, nested_absmax_ptr, nested_code_ptr, offset, blk, mask,
            NESTED_BLOCKSIZE: tl.constexpr, NESTED: tl.constexpr):  # fmt: skip
    """fp32 absmax of blocks `blk` (nested: code8[q] * nested_absmax + offset, rounded per step)."""
    if NESTED:
        q8 = tl.load(absmax_ptr + blk, mask=mask, other=0).to(tl.int32)
        scale2 = tl.load(nested_absmax_ptr + blk // NESTED_BLOCKSIZE, mask=mask, other=0.0)
        a = tl.load(nested_code_ptr + q8) * scale2
        a = a + offset
    else:
        a = tl.load(absmax_ptr + blk, mask=mask, other=0.0)
    return a


@triton.jit
def _dequant_tile(packed_ptr, absmax_ptr, code_ptr, nested_absmax_ptr, nested_code_ptr, offset,
                  rn, k0, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCKSIZE: tl.constexpr, NESTED_BLOCKSIZE: tl.constexpr, NESTED: tl.constexpr):  # fmt: skip
    """fp32 W[rn, k0:k0+BLOCK_K] as a [BLOCK_N, BLOCK_K] tile (rn: int64 row indices).

    Rows start on a byte (K is even) and blocks never straddle rows (K % BLOCKSIZE == 0), so
    byte (n, k) = n*K/2 + k/2 (high nibble first) and block (n, k) = n*K/BLOCKSIZE + k/BLOCKSIZE.
    Out-of-range entries are finite garbage; the other operand is zero there."""
    row_ok = rn < N
    kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    byte = tl.load(packed_ptr + rn[:, None] * (K // 2) + kb[None, :],
                   mask=row_ok[:, None] & (kb[None, :] < K // 2), other=0)  # fmt: skip
    q = tl.load(code_ptr + tl.interleave(byte >> 4, byte & 0xF).to(tl.int32))
    blocks_per_row = K // BLOCKSIZE
    if BLOCK_K <= BLOCKSIZE:  # one absmax per tile row
        blk = rn * blocks_per_row + k0 // BLOCKSIZE
        a = _absmax(absmax_ptr, nested_absmax_ptr, nested_code_ptr, offset, blk, row_ok, NESTED_BLOCKSIZE, NESTED)
        w = q * a[:, None]
    else:  # BLOCK_K // BLOCKSIZE absmax per tile row
        j = tl.arange(0, BLOCK_K // BLOCKSIZE)
        blk = rn[:, None] * blocks_per_row + (k0 // BLOCKSIZE + j)[None, :]
        blk_ok = row_ok[:, None] & ((k0 + j * BLOCKSIZE) < K)[None, :]
        a = _absmax(absmax_ptr, nested_absmax_ptr, nested_code_ptr, offset, blk, blk_ok, NESTED_BLOCKSIZE, NESTED)
        w = tl.reshape(q, [BLOCK_N, BLOCK_K // BLOCKSIZE, BLOCKSIZE]) * a[:, :, None]
        w = tl.reshape(w, [BLOCK_N, BLOCK_K])
    return w


@triton.jit
def _linear_4bit_kernel(
    x_ptr, packed_ptr, absmax_ptr, code_ptr, nested_absmax_ptr, nested_code_ptr, offset_ptr, bias_ptr, y_ptr,
    M, N, K, stride_xm, stride_xk, stride_ym,
    M_BUCKET,  # autotune key only
    BLOCKSIZE: tl.constexpr, NESTED_BLOCKSIZE: tl.constexpr, NESTED: tl.constexpr, HAS_BIAS: tl.constexpr,
    OUT_KIND: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y[M, N] = x[M, K] @ W[N, K].T (+ bias): grid (M tiles, N tiles), loop over K."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offset = 0.0
    if NESTED:
        offset = tl.load(offset_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)  # fmt: skip
        w = _dequant_tile(packed_ptr, absmax_ptr, code_ptr, nested_absmax_ptr, nested_code_ptr, offset,
                          rn, k0, N, K, BLOCK_N, BLOCK_K, BLOCKSIZE, NESTED_BLOCKSIZE, NESTED)  # fmt: skip
        acc = _mma(x, tl.trans(_to_operand(w, OUT_KIND, INTERPRET)), acc, OUT_KIND, INTERPRET)
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    _store_out(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc, (rm[:, None] < M) & (rn[None, :] < N),
               OUT_KIND, INTERPRET)  # fmt: skip


@triton.jit
def _matmul_4bit_kernel(
    g_ptr, packed_ptr, absmax_ptr, code_ptr, nested_absmax_ptr, nested_code_ptr, offset_ptr, out_ptr,
    M, N, K, stride_gm, stride_gn, stride_om,
    M_BUCKET,  # autotune key only
    BLOCKSIZE: tl.constexpr, NESTED_BLOCKSIZE: tl.constexpr, NESTED: tl.constexpr,
    OUT_KIND: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out[M, K] = g[M, N] @ W[N, K]: grid (M tiles, K tiles), loop over N (W read as in forward)."""
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    k0 = pid_k * BLOCK_K
    rk = k0 + tl.arange(0, BLOCK_K)
    offset = 0.0
    if NESTED:
        offset = tl.load(offset_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        g = tl.load(g_ptr + rm[:, None] * stride_gm + rn[None, :] * stride_gn,
                    mask=(rm[:, None] < M) & (rn[None, :] < N), other=0.0)  # fmt: skip
        w = _dequant_tile(packed_ptr, absmax_ptr, code_ptr, nested_absmax_ptr, nested_code_ptr, offset,
                          rn, k0, N, K, BLOCK_N, BLOCK_K, BLOCKSIZE, NESTED_BLOCKSIZE, NESTED)  # fmt: skip
        acc = _mma(g, _to_operand(w, OUT_KIND, INTERPRET), acc, OUT_KIND, INTERPRET)
    _store_out(out_ptr + rm[:, None] * stride_om + rk[None, :], acc, (rm[:, None] < M) & (rk[None, :] < K),
               OUT_KIND, INTERPRET)  # fmt: skip


def _m_bucket(m: int) -> int:
    return min(triton.next_power_of_2(max(m, 1)), 4096)


def _gpu_configs(direction: str) -> list[triton.Config]:
    """Candidate tiles (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), pruned by M below. Forward:
    output tile BLOCK_M x BLOCK_N, reduction BLOCK_K; backward: output BLOCK_M x BLOCK_K,
    reduction BLOCK_N. Each compiles for sm_90 within 227 KB of shared memory (checked offline)."""
    if direction == "forward":
        tiles = [
            # decode / small batch: memory bound; the grid is (1, N/BLOCK_N), so narrow tiles fill
            # the 132 SMs (there is no split-K)
            (16, 32, 128, 4, 4), (16, 64, 128, 4, 4), (16, 64, 256, 4, 3), (16, 128, 64, 4, 4), (16, 32, 256, 4, 4),
            (16, 16, 256, 4, 4),
            # medium M
            (32, 64, 128, 4, 4), (64, 64, 128, 4, 3), (64, 128, 64, 4, 4),
            # large M: compute bound (wgmma from BLOCK_M 64 up)
            (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 128, 128, 8, 3), (256, 128, 64, 8, 3), (64, 256, 64, 8, 3),
        ]  # fmt: skip
    else:
        tiles = [
            # small M: the grid is (1, K/BLOCK_K)
            (16, 128, 32, 4, 4), (16, 64, 64, 4, 4), (16, 128, 64, 4, 4), (16, 256, 32, 4, 3), (16, 64, 128, 4, 4),
            (16, 32, 128, 4, 4),
            (32, 64, 128, 4, 4), (64, 64, 128, 4, 3), (64, 128, 64, 4, 4),
            (128, 64, 128, 8, 3), (128, 64, 256, 8, 3), (128, 128, 128, 8, 3), (256, 64, 128, 8, 3), (128, 128, 64, 8, 3),
        ]  # fmt: skip
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s) for m, n, k, w, s in tiles
    ]


def _prune(configs, named_args, **kwargs):
    bucket = named_args["M_BUCKET"]
    if bucket <= 16:
        keep = [c for c in configs if c.kwargs["BLOCK_M"] == 16]
    elif bucket <= 128:
        keep = [c for c in configs if 32 <= c.kwargs["BLOCK_M"] <= 64]
    else:
        keep = [c for c in configs if c.kwargs["BLOCK_M"] >= 64]
    return keep or configs


_TUNE = {"key": ["M_BUCKET", "N", "K", "BLOCKSIZE", "NESTED"], "prune_configs_by": {"early_config_prune": _prune}}
_linear_4bit_tuned = triton.autotune(configs=_gpu_configs("forward"), **_TUNE)(_linear_4bit_kernel)
_matmul_4bit_tuned = triton.autotune(configs=_gpu_configs("backward"), **_TUNE)(_matmul_4bit_kernel)


def check_fused_supported(dtype: torch.dtype, state: QuantState, device: torch.device | None = None) -> None:
    """Raise ValueError saying why the fused kernels cannot take this input (callers fall back)."""
    if dtype not in FUSED_DTYPES:
        raise ValueError(f"fused 4-bit matmul takes float16/bfloat16 inputs, got {dtype}")
    if len(state.shape) != 2:
        raise ValueError(f"fused 4-bit matmul needs a 2-D weight, got shape {tuple(state.shape)}")
    if state.blocksize not in FUSED_BLOCKSIZES:
        raise ValueError(f"fused 4-bit matmul supports blocksizes {FUSED_BLOCKSIZES}, got {state.blocksize}")
    if state.shape[1] % state.blocksize:
        raise ValueError(
            f"fused 4-bit matmul needs in_features ({state.shape[1]}) to be a multiple of the blocksize ({state.blocksize})"
        )
    if device is not None and not triton_usable(device):
        raise ValueError(f"Triton cannot run on {device} here (CUDA, or CPU with TRITON_INTERPRET=1)")


def fused_supported(dtype: torch.dtype, state: QuantState, device: torch.device | None = None) -> bool:
    try:
        check_fused_supported(dtype, state, device)
    except ValueError:
        return False
    return True


def _state_args(packed: torch.Tensor, state: QuantState) -> tuple:
    packed = packed.reshape(-1).view(torch.uint8)
    absmax = state.absmax.contiguous()
    code = state.code.contiguous()
    if state.nested:
        nested = (state.nested_absmax.contiguous(), state.nested_code.contiguous(), state.offset.reshape(1).float())
    else:
        nested = (absmax, absmax, absmax)  # unused placeholders: the NESTED branch is compiled out
    return packed, absmax, code, *nested


def _launch(tuned, kernel, args, m: int, n_tiles_dim: int, meta: dict, tile, tile_dim: str):
    """Run `kernel` with a fixed tile, or through the autotuner (tile "autotune"; the default on GPU)."""
    if tile is None:
        tile = INTERPRETER_TILE if _interpreting() else "autotune"
    if tile != "autotune":
        block_m, block_n, block_k = tile
        fixed = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
        grid = (triton.cdiv(m, block_m), triton.cdiv(n_tiles_dim, fixed[tile_dim]))
        kernel[grid](*args, **meta, **fixed, num_warps=4, enable_fp_fusion=False)
        return

    def grid(cfg):
        return triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n_tiles_dim, cfg[tile_dim])

    tuned[grid](*args, **meta, enable_fp_fusion=False)


def _check(t: torch.Tensor, packed: torch.Tensor, state: QuantState, inner: int, what: str) -> None:
    check_fused_supported(t.dtype, state, t.device)
    if t.shape[-1] != inner:
        raise ValueError(f"{what} has last dim {t.shape[-1]}, the weight {tuple(state.shape)} needs {inner}")
    if packed.device != t.device or state.absmax.device != t.device:
        raise ValueError(f"{what} is on {t.device}, the packed weight on {packed.device}, its absmax on {state.absmax.device}")


def linear_4bit_triton(
    x: torch.Tensor,
    packed: torch.Tensor,
    state: QuantState,
    bias: torch.Tensor | None = None,
    *,
    tile: tuple[int, int, int] | str | None = None,
) -> torch.Tensor:
    """x[..., K] @ dequant(W[N, K]).T (+ bias[N]) in one launch; output [..., N] in x's dtype.

    `tile` = (BLOCK_M, BLOCK_N, BLOCK_K), powers of two >= 16 (BLOCK_K >= 32), fixes the tile;
    "autotune" picks one from `_gpu_configs`; None (default) means "autotune" on GPU and
    INTERPRETER_TILE under TRITON_INTERPRET=1."""
    n, k = state.shape
    _check(x, packed, state, k, "x")
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return y.reshape(*x.shape[:-1], n)
    if bias is not None and (bias.shape != (n,) or bias.device != x.device):
        raise ValueError(f"bias must have shape ({n},) on {x.device}, got {tuple(bias.shape)} on {bias.device}")
    args = (x2, *_state_args(packed, state), bias.contiguous() if bias is not None else y, y,
            m, n, k, x2.stride(0), x2.stride(1), y.stride(0), _m_bucket(m))  # fmt: skip
    meta = {"BLOCKSIZE": state.blocksize, "NESTED_BLOCKSIZE": state.nested_blocksize, "NESTED": state.nested,
            "HAS_BIAS": bias is not None, "OUT_KIND": _OUT_KIND[x.dtype], "INTERPRET": _interpreting()}  # fmt: skip
    _launch(_linear_4bit_tuned, _linear_4bit_kernel, args, m, n, meta, tile, "BLOCK_N")
    return y.reshape(*x.shape[:-1], n)


def matmul_4bit_triton(
    g: torch.Tensor, packed: torch.Tensor, state: QuantState, *, tile: tuple[int, int, int] | str | None = None
) -> torch.Tensor:
    """g[..., N] @ dequant(W[N, K]) in one launch (the input gradient of `linear_4bit_triton`);
    output [..., K] in g's dtype. `tile` as in `linear_4bit_triton`."""
    n, k = state.shape
    _check(g, packed, state, n, "grad")
    g2 = g.reshape(-1, n)
    m = g2.shape[0]
    out = torch.empty((m, k), dtype=g.dtype, device=g.device)
    if m == 0:
        return out.reshape(*g.shape[:-1], k)
    args = (g2, *_state_args(packed, state), out, m, n, k, g2.stride(0), g2.stride(1), out.stride(0), _m_bucket(m))
    meta = {"BLOCKSIZE": state.blocksize, "NESTED_BLOCKSIZE": state.nested_blocksize, "NESTED": state.nested,
            "OUT_KIND": _OUT_KIND[g.dtype], "INTERPRET": _interpreting()}  # fmt: skip
    _launch(_matmul_4bit_tuned, _matmul_4bit_kernel, args, m, k, meta, tile, "BLOCK_K")
    return out.reshape(*g.shape[:-1], k)
