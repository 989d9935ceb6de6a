import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")

from torch import nn  # noqa: E402

from vramplan.torch_nf4.linear import NF4Linear, matmul_4bit  # noqa: E402


def _layer(in_features=96, out_features=40, bias=True, **kwargs) -> NF4Linear:
    torch.manual_seed(0)
    layer = NF4Linear.from_linear(nn.Linear(in_features, out_features, bias=bias), **kwargs)
    if layer.lora_rank:
        nn.init.normal_(layer.lora_B.weight)  # zero at init; make the adapter path count
    return layer


def _reference(layer: NF4Linear, dtype: torch.dtype) -> nn.Module:
    """The same layer built from the dequantized weight with plain torch modules."""
    base = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=dtype)
    base.weight.data = layer.dequantized_weight(dtype)
    base.weight.requires_grad_(False)
    if layer.bias is not None:
        base.bias.data = layer.bias.detach().to(dtype)

    class Reference(nn.Module):
        def forward(self, x):
            out = base(x.to(dtype)).to(x.dtype)
            if layer.lora_rank:
                lora_x = x.to(layer.lora_A.weight.dtype)
                out = out + (layer.lora_B(layer.lora_A(lora_x)) * layer.lora_scaling).to(out.dtype)
            return out

    return Reference()


def test_lora_b_starts_at_zero_so_the_adapter_starts_as_a_no_op():
    layer = NF4Linear.from_linear(nn.Linear(64, 32), lora_rank=4, compute_dtype=torch.float32)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert layer.lora_A.weight.dtype == torch.float32 and isinstance(layer.lora_dropout, nn.Identity)
    x = torch.randn(3, 64)
    assert torch.equal(layer(x), matmul_4bit(x, layer.weight, layer.quant_state, layer.bias))


def test_float64_gradcheck_of_input_lora_and_bias_gradients():
    layer = _layer(40, 24, lora_rank=3, lora_alpha=6, compute_dtype=torch.float64, lora_dtype=torch.float64)
    x = torch.randn(2, 5, 40, dtype=torch.float64)
    inputs = [t.detach().double().requires_grad_() for t in (x, layer.lora_A.weight, layer.lora_B.weight, layer.bias)]

    def forward(x, lora_a, lora_b, bias):  # NF4Linear.forward with its trainable tensors as inputs
        base = matmul_4bit(x, layer.weight, layer.quant_state, bias)
        return base + (x @ lora_a.T @ lora_b.T) * layer.lora_scaling

    assert torch.autograd.gradcheck(forward, inputs)
    with torch.no_grad():  # and that is what the module computes
        layer.bias.data = inputs[3].detach().clone()
        torch.testing.assert_close(layer(x), forward(*[t.detach() for t in inputs]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("compute_dtype, input_dtype, tol", [
    (torch.float32, torch.float32, 0.0),
    (torch.bfloat16, torch.float32, 2e-2),
    (torch.bfloat16, torch.bfloat16, 2e-2),
    (torch.float16, torch.float32, 2e-3),
])  # fmt: skip
def test_forward_and_backward_match_a_layer_built_from_the_dequantized_weight(compute_dtype, input_dtype, tol):
    layer = _layer(96, 40, lora_rank=4, compute_dtype=compute_dtype, double_quant=True)
    reference = _reference(layer, compute_dtype)
    x = torch.randn(3, 7, 96, dtype=input_dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref_out = layer(x1), reference(x2)
    assert out.dtype == input_dtype
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x1, layer.lora_A.weight, layer.lora_B.weight], grad)
    want = torch.autograd.grad(ref_out, [x2, layer.lora_A.weight, layer.lora_B.weight], grad)
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol * max(1.0, w.abs().max().item()))


def _saved_during_forward(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


def test_base_matmul_saves_only_the_packed_weight():
    layer = _layer(96, 40, compute_dtype=torch.float32)
    x = torch.randn(4, 96, requires_grad=True)
    out, saved = _saved_during_forward(lambda: matmul_4bit(x, layer.weight, layer.quant_state, layer.bias))
    assert len(saved) == 1 and saved[0].data_ptr() == layer.weight.data_ptr() and saved[0].dtype == torch.uint8
    out.sum().backward()
    assert x.grad is not None


def test_lora_layer_saves_no_dequantized_weight_and_no_base_input():
    layer = _layer(96, 40, lora_rank=4, compute_dtype=torch.bfloat16)
    x = torch.randn(4, 96, requires_grad=True)
    out, saved = _saved_during_forward(lambda: layer(x))
    float_weight_shapes = {(40, 96), (96, 40)}
    assert not [t for t in saved if tuple(t.shape) in float_weight_shapes and t.is_floating_point()]
    # what is saved: the packed weight, and the adapter's own inputs (as peft saves them)
    new_bytes = sum(t.numel() * t.element_size() for t in saved if t.data_ptr() != layer.weight.data_ptr())
    rank = layer.lora_rank
    adapter_bytes = (4 * 96 + 4 * rank) * 4 + rank * 96 * 4 + 40 * rank * 4  # inputs + weights the linears keep
    assert new_bytes <= adapter_bytes


def test_moving_the_model_to_a_float_dtype_keeps_fp32_constants():
    layer = _layer(96, 40, double_quant=True)
    before = {k: v.clone() for k, v in layer.quant_state.tensors().items()}
    layer.to(torch.bfloat16)
    for name, tensor in layer.quant_state.tensors().items():
        assert tensor.dtype == before[name].dtype and torch.equal(tensor, before[name]), name
    assert layer.weight.dtype == torch.uint8 and layer.bias.dtype == torch.bfloat16
