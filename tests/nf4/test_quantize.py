import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")

from vramplan.torch_nf4 import codes, quantize_4bit  # noqa: E402

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _adversarial(shape_n: int, kind: str, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(hash(kind) % 1000)
    x = torch.randn(shape_n, generator=g)
    if kind == "zeros":
        x = torch.zeros(shape_n)
    elif kind == "constant_blocks":
        x = torch.full((shape_n,), 0.37)
        x[: shape_n // 3] = -2.5
    elif kind == "huge":
        largest = 65504.0 if dtype == torch.float16 else 1e36  # near float32 max: see the overflow test
        x = x / x.abs().max() * largest
    elif kind == "tiny":
        x = x * (1e-6 if dtype == torch.float16 else 1e-38)  # subnormal in fp32
    elif kind == "mixed_scales":
        x = x * torch.logspace(-8, 3, shape_n)
    elif kind == "code_points":  # exactly the table values and the midpoints between them
        table = codes.fourbit_code("nf4")
        sorted_table = table.sort().values
        mids = (sorted_table[:-1] + sorted_table[1:]) / 2
        x = torch.cat([table, mids]).repeat(shape_n // 31 + 1)[:shape_n]
    elif kind == "one_outlier":
        x[shape_n // 2] = 1e4
    return x.to(dtype)


def _assert_same_as_bnb(weight, blocksize, quant_type, double_quant):
    from _bnb import bnb_functional

    packed, state = quantize_4bit(weight, blocksize, quant_type, double_quant)
    ref_packed, ref = bnb_functional.quantize_4bit(
        weight, blocksize=blocksize, compress_statistics=double_quant, quant_type=quant_type
    )
    assert packed.dtype == torch.uint8 and packed.shape == ref_packed.shape == ((weight.numel() + 1) // 2, 1)
    assert torch.equal(packed, ref_packed)
    assert torch.equal(state.absmax, ref.absmax)
    assert torch.equal(state.code, ref.code)
    assert (state.shape, state.dtype, state.blocksize, state.quant_type) == (ref.shape, ref.dtype, ref.blocksize, ref.quant_type)
    assert state.nested == ref.nested == double_quant
    if double_quant:
        assert torch.equal(state.offset, ref.offset)
        assert torch.equal(state.nested_absmax, ref.state2.absmax)
        assert torch.equal(state.nested_code, ref.state2.code)
        assert state.nested_blocksize == ref.state2.blocksize == 256


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", [32, 64, 256, 4096])
@pytest.mark.parametrize("shape", [(33, 65), (7,), (300, 257)])
def test_random_weights_quantize_to_the_same_bytes_as_bitsandbytes(shape, blocksize, dtype, double_quant, quant_type):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape) + blocksize)).to(dtype)
    _assert_same_as_bnb(weight, blocksize, quant_type, double_quant)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kind", ["zeros", "constant_blocks", "huge", "tiny", "mixed_scales", "code_points", "one_outlier"]
)
def test_adversarial_weights_quantize_to_the_same_bytes_as_bitsandbytes(kind, dtype, double_quant, quant_type):
    for n, blocksize in [(1, 64), (63, 64), (64 * 300 + 5, 64), (1031, 128)]:
        _assert_same_as_bnb(_adversarial(n, kind, dtype), blocksize, quant_type, double_quant)


def test_double_quant_absmax_near_dynamic_map_midpoints_matches_bitsandbytes():
    # absmax - offset landing on the 8-bit map's midpoints and LUT bin edges: where a rounding
    # rule that differs from bitsandbytes' CPU lookup table would show.
    table = codes.dynamic_map()
    targets = torch.cat([(table[:-1] + table[1:]) / 2, table, torch.linspace(-1, 1, 4097)])
    weight = torch.zeros(targets.numel(), 64)
    weight[:, 0] = targets + 2.0  # absmax of row i's block = |targets[i] + 2|
    _assert_same_as_bnb(weight, 64, "nf4", True)


def test_packing_puts_the_first_element_in_the_high_nibble():
    packed, _ = quantize_4bit(torch.tensor([-1.0, 1.0, 0.5, 0.0]), 64, "nf4")
    assert packed.flatten().tolist() == [0x0F, 0xC7]  # codes 0, 15, 12, 7
    packed, _ = quantize_4bit(torch.tensor([-1.0, 1.0, 0.5]), 64, "fp4")
    assert packed.flatten().tolist() == [0xB3, 0x50]  # codes 11, 3, 5 and a zero pad nibble


def test_code_tables_equal_bitsandbytes():
    from _bnb import bnb_functional

    assert torch.equal(codes.dynamic_map(), bnb_functional.create_dynamic_map())
    for quant_type in codes.QUANT_TYPES:
        assert torch.equal(codes.fourbit_code(quant_type), bnb_functional.get_4bit_type(quant_type, device="cpu"))


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_weights_are_rejected_with_a_clear_message(bad):
    weight = torch.randn(10, 64)
    weight[3, 5] = bad
    with pytest.raises(ValueError, match="inf/NaN"):
        quantize_4bit(weight)


def test_double_quant_offset_overflow_is_rejected():
    weight = torch.full((64 * 8,), 3.0e38)  # the mean of the absmax overflows float32
    quantize_4bit(weight, double_quant=False)
    with pytest.raises(ValueError, match="offset"):
        quantize_4bit(weight, double_quant=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"blocksize": 48}, "blocksize"), ({"quant_type": "int4"}, "quant_type")],
)
def test_invalid_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quantize_4bit(torch.randn(64), **kwargs)


def test_integer_and_empty_weights_are_rejected():
    with pytest.raises(ValueError, match="float"):
        quantize_4bit(torch.ones(64, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty"):
        quantize_4bit(torch.ones(0))
