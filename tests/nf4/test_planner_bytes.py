"""The planner's NF4 byte formula against real quantized tensors."""
import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")

from vramplan.torch_nf4 import quantize_4bit  # noqa: E402
from vramplan.torch_nf4.accounting import model_tensor_bytes, state_tensor_bytes, total_quantized_bytes  # noqa: E402
from vramplan.memory import weights  # noqa: E402


# catalog-shaped layers (Llama 2/3 7B/8B q_proj, up_proj, Mistral/Llama-3 down_proj, a 128k vocab head)
# and odd sizes that leave ragged blocks and an odd element count.
SHAPES = [(4096, 4096), (4096, 11008), (14336, 4096), (4096, 128256), (1, 1), (7, 9), (33, 65), (257, 1001)]


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("blocksize", [64, 128])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_planner_formula_equals_the_bytes_of_real_quantized_tensors(shape, blocksize, double_quant):
    numel = shape[0] * shape[1]
    if numel > 2**24:  # quantizing a 0.5G-element weight takes seconds: scale the rows, keep the formula honest
        shape = (max(1, shape[0] // 64), shape[1])
        numel = shape[0] * shape[1]
    weight = torch.randn(shape, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    packed, state = quantize_4bit(weight, blocksize, "nf4", double_quant)
    assert weights.nf4_state_tensor_bytes(numel, blocksize, double_quant) == state_tensor_bytes(packed, state)


def test_formula_holds_for_the_full_size_128k_head_without_quantizing_it():
    # the 4096 x 128256 head at full size, by the layout rules (quantizing it here would take too long)
    numel = 4096 * 128256
    blocks = -(-numel // 64)
    expected = {"packed": numel // 2, "absmax": blocks, "quant_map": 64, "nested_absmax": -(-blocks // 256) * 4,
                "nested_quant_map": 1024, "offset": 4}  # fmt: skip
    assert weights.nf4_state_tensor_bytes(numel, 64, True) == expected


def test_model_accounting_sums_every_quantized_layer():
    from torch import nn

    from vramplan.torch_nf4.linear import NF4Linear

    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 33))
    model[0] = NF4Linear.from_linear(model[0], double_quant=True)
    model[2] = NF4Linear.from_linear(model[2], double_quant=False, lora_rank=2)
    per_module = model_tensor_bytes(model)
    assert per_module.keys() == {"0", "2"}
    assert per_module["0"] == weights.nf4_state_tensor_bytes(64 * 96, 64, True)
    assert per_module["2"] == weights.nf4_state_tensor_bytes(96 * 33, 64, False)
    assert total_quantized_bytes(model) == sum(sum(v.values()) for v in per_module.values())
