import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")

from vramplan.torch_nf4 import QuantState, dequantize_4bit_torch, quantize_4bit  # noqa: E402
from vramplan.torch_nf4.linear import NF4Linear  # noqa: E402


def _assert_states_equal(a: QuantState, b: QuantState):
    assert (a.shape, a.dtype, a.blocksize, a.quant_type, a.nested) == (b.shape, b.dtype, b.blocksize, b.quant_type, b.nested)
    assert a.tensors().keys() == b.tensors().keys()
    for name, tensor in a.tensors().items():
        assert torch.equal(tensor, b.tensors()[name]), name


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_checkpoint_round_trips_through_bitsandbytes(double_quant, quant_type):
    from _bnb import bnb_dequantize, bnb_functional

    weight = torch.randn(48, 80, dtype=torch.bfloat16)
    packed, state = quantize_4bit(weight, 64, quant_type, double_quant)
    ours = state.as_dict()
    ref_packed, ref_state = bnb_functional.quantize_4bit(weight, compress_statistics=double_quant, quant_type=quant_type)
    theirs = ref_state.as_dict(packed=True)
    assert ours.keys() == theirs.keys()
    for key in ours:  # the same bytes, JSON blob included
        assert torch.equal(ours[key], theirs[key]), key

    loaded_in_bnb = bnb_functional.QuantState.from_dict({"weight." + k: v for k, v in ours.items()}, device="cpu")
    assert torch.equal(bnb_dequantize(packed, loaded_in_bnb), dequantize_4bit_torch(packed, state))
    back = QuantState.from_dict({"weight." + k: v for k, v in loaded_in_bnb.as_dict(packed=True).items()})
    _assert_states_equal(back, state)


def test_safetensors_checkpoint_of_a_layer_loads_into_a_fresh_layer(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source = NF4Linear.from_linear(torch.nn.Linear(96, 40), double_quant=True)
    path = tmp_path / "layer.safetensors"
    safetensors_torch.save_file(source.state_dict(), path)
    keys = set(safetensors_torch.load_file(path))
    assert {"weight", "bias", "weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map",
            "weight.quant_state.bitsandbytes__nf4"} == keys  # fmt: skip

    target = NF4Linear.from_linear(torch.nn.Linear(96, 40), double_quant=False, quant_type="fp4")
    target.load_state_dict(safetensors_torch.load_file(path))
    _assert_states_equal(target.quant_state, source.quant_state)
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)


def test_from_dict_needs_exactly_one_packed_entry():
    with pytest.raises(ValueError, match="exactly one"):
        QuantState.from_dict({"absmax": torch.ones(1)})
