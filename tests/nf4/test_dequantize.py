import os

import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")
pytest.importorskip("triton", reason="the Triton kernel needs triton")

from vramplan.torch_nf4 import dequantize_4bit, dequantize_4bit_torch, quantize_4bit  # noqa: E402
from vramplan.torch_nf4.dequantize_triton import dequantize_4bit_triton  # noqa: E402

OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_kernel_runs_in_the_interpreter_on_cpu():
    if DEVICE == "cpu":
        assert os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("shape, blocksize", [((33, 65), 64), ((128, 256), 64), ((5, 300), 32), ((17, 512), 256), ((3, 4099), 4096)])
def test_triton_dequant_is_bit_exact_against_bitsandbytes(shape, blocksize, out_dtype, double_quant, quant_type):
    from _bnb import bnb_dequantize, bnb_functional

    weight = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0])).to(out_dtype)
    packed, state = quantize_4bit(weight, blocksize, quant_type, double_quant)
    ref_packed, ref_state = bnb_functional.quantize_4bit(
        weight, blocksize=blocksize, compress_statistics=double_quant, quant_type=quant_type
    )
    expected = bnb_dequantize(ref_packed, ref_state)
    got = dequantize_4bit_triton(packed.to(DEVICE), state.to(DEVICE)).cpu()
    assert got.dtype == expected.dtype == out_dtype and got.shape == expected.shape
    assert torch.equal(got, expected)
    assert torch.equal(dequantize_4bit_torch(packed, state), expected)


@pytest.mark.parametrize("double_quant", [False, True])
def test_dequant_to_another_dtype_rounds_once_from_float32(double_quant):
    packed, state = quantize_4bit(torch.randn(40, 96), 64, "nf4", double_quant)
    fp32 = dequantize_4bit_torch(packed, state, torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        assert torch.equal(dequantize_4bit(packed.to(DEVICE), state.to(DEVICE), dtype, backend="triton").cpu(), fp32.to(dtype))


def test_bf16_rounds_to_nearest_even_not_truncates():
    packed, state = quantize_4bit(torch.randn(50, 64), 64, "nf4", True)
    fp32 = dequantize_4bit_torch(packed, state, torch.float32)
    truncated = (fp32.view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)
    expected = fp32.to(torch.bfloat16)
    assert not torch.equal(truncated, expected)  # the case discriminates
    assert torch.equal(dequantize_4bit_triton(packed.to(DEVICE), state.to(DEVICE), torch.bfloat16).cpu(), expected)


def test_adversarial_states_match_the_torch_reference():
    # zero blocks, constant blocks, a ragged last block, single element; every code and absmax code.
    pieces = [torch.zeros(64), torch.full((64,), -3.0), torch.randn(64) * 1e-30, torch.randn(1000) * 1e3, torch.randn(3)]
    weight = torch.cat(pieces)
    for double_quant in (False, True):
        packed, state = quantize_4bit(weight, 64, "nf4", double_quant)
        for dtype in OUT_DTYPES:
            assert torch.equal(
                dequantize_4bit_triton(packed.to(DEVICE), state.to(DEVICE), dtype).cpu(),
                dequantize_4bit_torch(packed, state, dtype),
            )
    packed, state = quantize_4bit(torch.tensor([0.5]), 64, "nf4", True)
    assert dequantize_4bit(packed, state, backend="triton").tolist() == dequantize_4bit_torch(packed, state).tolist()


def test_float64_dequant_is_exact_float32_values():
    packed, state = quantize_4bit(torch.randn(8, 64), 64, "nf4", True)
    assert torch.equal(dequantize_4bit(packed, state, torch.float64), dequantize_4bit_torch(packed, state).double())


def test_unknown_backend_and_dtype_are_rejected():
    packed, state = quantize_4bit(torch.randn(64))
    with pytest.raises(ValueError, match="backend"):
        dequantize_4bit(packed, state, backend="cuda")
    with pytest.raises(ValueError, match="float"):
        dequantize_4bit(packed, state, torch.int8)


@pytest.mark.cuda
def test_compiled_kernel_is_bit_exact_on_gpu_for_a_llama_shape():
    from _bnb import bnb_functional

    weight = torch.randn(1024, 4096, device="cuda", dtype=torch.bfloat16)
    ref_packed, ref_state = bnb_functional.quantize_4bit(weight, compress_statistics=True, quant_type="nf4")
    packed, state = quantize_4bit(weight, 64, "nf4", True)
    assert torch.equal(packed, ref_packed)
    assert torch.equal(dequantize_4bit_triton(packed, state), bnb_functional.dequantize_4bit(ref_packed, ref_state))
