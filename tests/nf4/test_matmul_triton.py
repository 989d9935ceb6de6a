"""Fused 4-bit matmul (vramplan.torch_nf4.matmul_triton), on CPU under TRITON_INTERPRET=1.

Tolerance. The reference is ref = x.float() @ Wd.float().T (+ bias), Wd = dequantize_4bit(W, x.dtype):
the same W values the kernel feeds to tl.dot (each is fp32 code*absmax rounded once to x.dtype, as
the exact one-hot tests below check). Products of two bf16/fp16 values are exact in fp32, so the
kernel and the reference differ only by (a) fp32 summation order: each sum of n = K+1 terms (the
bias is the +1) is within gamma_n * mag of the exact value, gamma_n = n*2^-24/(1 - n*2^-24) and
mag = |x| @ |Wd|.T + |bias| (Higham, Accuracy and Stability, eq. 3.5), and both sides carry such
an error; (b) the kernel's one rounding of its fp32 sum to x.dtype: at most u * |sum| with unit
roundoff u = 2^-8 (bf16) or 2^-11 (fp16), plus half the fp16 subnormal spacing (2^-25) near zero.
Hence |got - ref| <= u*|ref| + (2 + 2u)*gamma_n*mag + tiny, elementwise. With K <= 256 the
summation term is ~3e-5 * mag, far under the rounding term, so a wrong code, absmax, nibble order
or tile index (errors of order |x||w|) cannot hide in it.
"""
import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")
pytest.importorskip("triton", reason="the fused kernel needs triton")

from vramplan.torch_nf4 import dequantize_4bit, quantize_4bit  # noqa: E402
from vramplan.torch_nf4 import linear as linear_module  # noqa: E402
from vramplan.torch_nf4 import matmul_triton  # noqa: E402
from vramplan.torch_nf4.linear import NF4Linear, matmul_4bit  # noqa: E402
from vramplan.torch_nf4.matmul_triton import (  # noqa: E402
    check_fused_supported,
    fused_supported,
    linear_4bit_triton,
    matmul_4bit_triton,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
TINY = {torch.bfloat16: 0.0, torch.float16: 2.0**-25}
COMBOS = [(q, dq, dt) for q in ("nf4", "fp4") for dq in (False, True) for dt in (torch.bfloat16, torch.float16)]
SHAPES = [(1, 64, 192), (3, 96, 64), (17, 96, 128)]  # (M, N, K): every M, N and K of the brief


def _weight(n, k, blocksize=64, quant_type="nf4", double_quant=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    packed, state = quantize_4bit(torch.randn(n, k, generator=gen), blocksize, quant_type, double_quant)
    return packed.to(DEVICE), state.to(DEVICE)


def _assert_within_bound(got, a, b, dtype, bias=None):
    """got ~ a.float() @ b.float() (+ bias) within the bound derived in the module docstring."""
    assert got.dtype == dtype and not torch.isnan(got).any()
    a, b, got = a.double().cpu(), b.double().cpu(), got.double().cpu()
    ref = a.float() @ b.float()
    mag = a.abs() @ b.abs()
    if bias is not None:
        ref = ref + bias.float().cpu()
        mag = mag + bias.double().abs().cpu()
    n = a.shape[-1] + 1
    gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
    u = UNIT_ROUNDOFF[dtype]
    bound = u * ref.double().abs() + (2 + 2 * u) * gamma * mag + TINY[dtype]
    err = (got - ref.double()).abs()
    assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3g}, max err {err.max().item():.3g}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("quant_type, double_quant, dtype", COMBOS, ids=lambda v: str(v).removeprefix("torch."))
def test_fused_forward_matches_dequantize_then_matmul_within_the_rounding_bound(shape, quant_type, double_quant, dtype):
    m, n, k = shape
    packed, state = _weight(n, k, 64, quant_type, double_quant, seed=m)
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=gen).to(dtype).to(DEVICE)
    bias = torch.randn(n, generator=gen).to(dtype).to(DEVICE) if m != 3 else None
    got = linear_4bit_triton(x, packed, state, bias)
    assert got.shape == (m, n)
    _assert_within_bound(got, x, dequantize_4bit(packed, state, dtype).T, dtype, bias)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("quant_type, double_quant, dtype", COMBOS, ids=lambda v: str(v).removeprefix("torch."))
def test_fused_backward_matches_grad_times_dequantized_weight(shape, quant_type, double_quant, dtype):
    m, n, k = shape
    packed, state = _weight(n, k, 64, quant_type, double_quant, seed=n)
    g = torch.randn(m, n, generator=torch.Generator().manual_seed(m)).to(dtype).to(DEVICE)
    got = matmul_4bit_triton(g, packed, state)
    assert got.shape == (m, k)
    _assert_within_bound(got, g, dequantize_4bit(packed, state, dtype), dtype)


@pytest.mark.parametrize("index", range(18))
def test_every_small_odd_shape_in_both_directions(index):
    # M x N x K over {1, 3, 17} x {64, 96} x {64, 128, 192}, the quantization combos cycled.
    m, n, k = [(m, n, k) for m in (1, 3, 17) for n in (64, 96) for k in (64, 128, 192)][index]
    quant_type, double_quant, dtype = COMBOS[index % len(COMBOS)]
    packed, state = _weight(n, k, 64, quant_type, double_quant, seed=index)
    gen = torch.Generator().manual_seed(100 + index)
    x = torch.randn(m, k, generator=gen).to(dtype).to(DEVICE)
    g = torch.randn(m, n, generator=gen).to(dtype).to(DEVICE)
    bias = torch.randn(n, generator=gen).to(dtype).to(DEVICE)
    wd = dequantize_4bit(packed, state, dtype)
    _assert_within_bound(linear_4bit_triton(x, packed, state, bias), x, wd.T, dtype, bias)
    _assert_within_bound(matmul_4bit_triton(g, packed, state), g, wd, dtype)


@pytest.mark.parametrize("blocksize, k, tile", [
    (32, 128, None),  # several absmax per BLOCK_K=64 tile row
    (128, 256, None),  # one absmax across two K tiles
    (256, 256, None),
    (64, 192, (16, 32, 128)),  # BLOCK_K > blocksize with a ragged last K tile
    (64, 128, (32, 64, 32)),  # BLOCK_K < blocksize
])  # fmt: skip
def test_every_supported_blocksize_and_tile_shape_in_both_directions(blocksize, k, tile):
    packed, state = _weight(80, k, blocksize, "nf4", True, seed=blocksize)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, k, generator=gen).to(torch.bfloat16).to(DEVICE)
    g = torch.randn(5, 80, generator=gen).to(torch.bfloat16).to(DEVICE)
    wd = dequantize_4bit(packed, state, torch.bfloat16)
    _assert_within_bound(linear_4bit_triton(x, packed, state, tile=tile), x, wd.T, torch.bfloat16)
    _assert_within_bound(matmul_4bit_triton(g, packed, state, tile=tile), g, wd, torch.bfloat16)


@pytest.mark.parametrize("quant_type, double_quant, dtype", [("nf4", True, torch.bfloat16), ("fp4", False, torch.float16)])
def test_one_hot_inputs_return_the_dequantized_weight_exactly(quant_type, double_quant, dtype):
    # x = rows of the identity: every output is one product W*1 summed with zeros, so no rounding
    # at all remains: the kernel's W must be bit-identical to dequantize_4bit's (bf16: rounded to
    # nearest even, not truncated).
    n, k = 96, 128
    packed, state = _weight(n, k, 64, quant_type, double_quant, seed=7)
    wd = dequantize_4bit(packed, state, dtype)
    assert torch.equal(linear_4bit_triton(torch.eye(k, dtype=dtype, device=DEVICE), packed, state), wd.T)
    assert torch.equal(matmul_4bit_triton(torch.eye(n, dtype=dtype, device=DEVICE), packed, state), wd)


def test_leading_dims_and_strided_inputs_are_accepted():
    packed, state = _weight(64, 128, seed=3)
    x = torch.randn(2, 3, 256, dtype=torch.bfloat16, device=DEVICE)[..., ::2]  # non-contiguous last dim
    got = linear_4bit_triton(x, packed, state)
    assert got.shape == (2, 3, 64)
    _assert_within_bound(got.reshape(6, 64), x.reshape(6, 128), dequantize_4bit(packed, state, torch.bfloat16).T, torch.bfloat16)
    g = torch.randn(64, dtype=torch.bfloat16, device=DEVICE).expand(4, 64)  # stride 0, as from .sum() backward
    _assert_within_bound(matmul_4bit_triton(g, packed, state), g, dequantize_4bit(packed, state, torch.bfloat16), torch.bfloat16)
    assert linear_4bit_triton(x[:0], packed, state).shape == (0, 3, 64)


def test_unsupported_inputs_raise_value_error_so_callers_fall_back():
    packed, state = _weight(64, 192, 64)
    x = torch.randn(2, 192, device=DEVICE)
    with pytest.raises(ValueError, match="float16/bfloat16"):
        linear_4bit_triton(x, packed, state)  # fp32
    with pytest.raises(ValueError, match="last dim"):
        linear_4bit_triton(x[:, :128].bfloat16(), packed, state)
    packed128, state128 = _weight(64, 192, 128)
    with pytest.raises(ValueError, match="multiple of the blocksize"):
        matmul_4bit_triton(torch.randn(2, 64, dtype=torch.bfloat16, device=DEVICE), packed128, state128)
    packed512, state512 = _weight(4, 512, 512)
    with pytest.raises(ValueError, match="blocksizes"):
        check_fused_supported(torch.bfloat16, state512)
    assert fused_supported(torch.float16, state) and not fused_supported(torch.float32, state)
    with pytest.raises(ValueError, match="backend"):
        matmul_4bit(x, packed, state, backend="cuda")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count launches of the fused kernels through the autograd Function."""
    calls = {"forward": 0, "backward": 0}

    def counting(fn, name):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(matmul_triton, "linear_4bit_triton", counting(linear_4bit_triton, "forward"))
    monkeypatch.setattr(matmul_triton, "matmul_4bit_triton", counting(matmul_4bit_triton, "backward"))
    return calls


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autograd_function_with_fused_backend_gives_analytic_gradients(dtype, kernel_calls):
    # Gradcheck in the only form a bf16/fp16 kernel allows: autograd's grad_x and grad_bias
    # against the analytic ones (grad_y @ Wd, grad_y summed over rows), within the same bound.
    n, k = 96, 128
    packed, state = _weight(n, k, 64, "nf4", True, seed=11)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, k, generator=gen).to(dtype).to(DEVICE).requires_grad_()
    bias = torch.randn(n, generator=gen).to(dtype).to(DEVICE).requires_grad_()
    out = matmul_4bit(x, packed, state, bias, backend="fused")
    grad_y = torch.randn(out.shape, generator=gen).to(dtype).to(DEVICE)
    grad_x, grad_bias = torch.autograd.grad(out, [x, bias], grad_y)
    assert kernel_calls == {"forward": 1, "backward": 1}
    wd = dequantize_4bit(packed, state, dtype)
    _assert_within_bound(out.detach().reshape(6, n), x.detach().reshape(6, k), wd.T, dtype, bias.detach())
    _assert_within_bound(grad_x.reshape(6, k), grad_y.reshape(6, n), wd, dtype)
    torch.testing.assert_close(grad_bias, grad_y.reshape(6, n).sum(0))  # not the kernel's business: same code path


def test_nf4_linear_follows_the_module_default_backend(monkeypatch, kernel_calls):
    assert linear_module.MATMUL_BACKEND == "dequant"  # the default until a GPU run shows fused faster
    torch.manual_seed(0)
    layer = NF4Linear.from_linear(torch.nn.Linear(128, 64), lora_rank=4, compute_dtype=torch.bfloat16).to(DEVICE)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(5, 128, device=DEVICE, requires_grad=True)
    runs = {}
    for backend in ("dequant", "fused"):
        monkeypatch.setattr(linear_module, "MATMUL_BACKEND", backend)
        out = layer(x)
        (grad_x,) = torch.autograd.grad(out, [x], torch.ones_like(out))
        runs[backend] = out, grad_x
    assert kernel_calls == {"forward": 1, "backward": 1}
    for got, want in zip(runs["fused"], runs["dequant"]):  # both round bf16 sums: two roundings apart
        torch.testing.assert_close(got, want, rtol=2 * 2.0**-8, atol=1e-2)


def test_fused_backend_falls_back_where_the_kernel_does_not_apply(kernel_calls):
    packed, state = _weight(64, 128, seed=5)
    x = torch.randn(3, 128, dtype=torch.float32, device=DEVICE, requires_grad=True)  # fp32 compute
    out = matmul_4bit(x, packed, state, backend="fused")
    out.sum().backward()
    assert kernel_calls == {"forward": 0, "backward": 0}
    assert torch.equal(out, matmul_4bit(x, packed, state, backend="dequant"))


@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 16, 512])
def test_compiled_fused_kernels_match_dequant_then_matmul_on_gpu(m):
    weight = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    packed, state = quantize_4bit(weight, 64, "nf4", True)
    wd = dequantize_4bit(packed, state, torch.bfloat16)
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    for got, want in ((linear_4bit_triton(x, packed, state, bias), x @ wd.T + bias), (matmul_4bit_triton(x, packed, state), x @ wd)):
        rel = (got.float() - want.float()).norm() / want.float().norm()
        assert rel < 5e-3, rel.item()  # two bf16 roundings of fp32 sums apart: ~2^-9 relative


def test_autotuned_launch_prunes_by_token_count_and_gives_the_same_result(monkeypatch):
    # The GPU path (autotuner, grid from the chosen config, M-bucket pruning), run in the
    # interpreter with a stub benchmark that ranks configs by (fake) time = their order.
    tried = []

    def stub_bench(kernel_call, quantiles):
        kernel_call()
        tried.append(1)
        return [float(len(tried))] * 3

    for tuned in (matmul_triton._linear_4bit_tuned, matmul_triton._matmul_4bit_tuned):
        monkeypatch.setattr(tuned, "_do_bench", stub_bench)
        monkeypatch.setattr(tuned, "cache", {})
    packed, state = _weight(64, 128, 64, "nf4", True, seed=9)
    wd = dequantize_4bit(packed, state, torch.float16)
    for m in (1, 40):
        x = torch.randn(m, 128, dtype=torch.float16, device=DEVICE)
        g = torch.randn(m, 64, dtype=torch.float16, device=DEVICE)
        tried.clear()
        _assert_within_bound(linear_4bit_triton(x, packed, state, tile="autotune"), x, wd.T, torch.float16)
        pruned = matmul_triton._prune(matmul_triton._gpu_configs("forward"), {"M_BUCKET": matmul_triton._m_bucket(m)})
        assert len(tried) == len(pruned) > 1
        assert all(c.kwargs["BLOCK_M"] == 16 for c in pruned) == (m == 1)
        _assert_within_bound(matmul_4bit_triton(g, packed, state, tile="autotune"), g, wd, torch.float16)


def test_benchmark_smoke_mode_runs_the_fused_matmul_section(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "nf4_dequant.py"
    out = tmp_path / "matmul.json"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--section", "matmul", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "winner" in done.stdout
    result = json.loads(out.read_text())
    rows = result["matmul_rows"]
    assert {(r["direction"], r["tokens"]) for r in rows} == {(d, m) for d in ("forward", "backward") for m in (1, 17)}
    assert result["rows"] == []  # --section matmul skips the dequant section
    for row in rows:
        assert row["fused_matches"] and row["winner"] in ("fused", "dequant_matmul")
        assert all(row[f"{p}_us"] > 0 and row[f"{p}_tflops"] > 0 for p in ("fused", "dequant_matmul", "bf16"))
        assert ("fused_gb_per_s" in row) == (row["tokens"] <= 16)
    assert result["matmul_summary"]["forward"]["cases"] == len(rows) // 2 == 2 * len({tuple(r["weight"]) for r in rows})
