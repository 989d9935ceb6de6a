"""The simulator's byte counts for single layers equal the sizes of real CPU tensors."""
import pytest

torch = pytest.importorskip("torch")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from vramplan.catalog import get_model  # noqa: E402
from vramplan.estimate import make_run  # noqa: E402
from vramplan.gpus import get_gpu  # noqa: E402
from vramplan.memory.dtypes import resolve_dtypes  # noqa: E402
from vramplan.simulate import architecture as arch  # noqa: E402
from vramplan.simulate.tracker import AllocationTracker, cuda_block_bytes  # noqa: E402


def _real_bytes(*tensors):
    return sum(cuda_block_bytes(t.untyped_storage().nbytes()) for t in tensors)


def test_block_rounding_is_the_cuda_allocators():
    assert [cuda_block_bytes(n) for n in (0, 1, 512, 513, 4096)] == [0, 512, 512, 1024, 4096]


def test_linear_forward_backward_bytes_equal_real_tensors():
    shapes = dict(x=(3, 5, 96), w=(160, 96))
    real_x, real_w = torch.randn(*shapes["x"]), torch.randn(*shapes["w"], requires_grad=True)
    real_out = torch.nn.functional.linear(real_x, real_w)
    real_out.sum().backward()
    with FakeTensorMode():
        x, w = torch.randn(*shapes["x"]), torch.randn(*shapes["w"], requires_grad=True)
        tracker = AllocationTracker()
        with tracker:
            tracker.track(w, "float_weights")
            tracker.track(x, "inputs")  # a view of an unseen storage would be counted when first seen
            tracker.start_phase("forward", "activations")
            out = torch.nn.functional.linear(x, w)
            assert tracker.current == _real_bytes(real_w, real_x, real_out)
            loss = out.sum()
            del out
            tracker.start_phase("backward", "activations")
            loss.backward()
            tracker.recategorize(w.grad, "gradients")
            tracker.stop()
    assert tracker.phase_categories("backward")["gradients"] == _real_bytes(real_w.grad)


@pytest.mark.parametrize("double_quant", [True, False])
def test_nf4_lora_layer_bytes_equal_real_quantized_tensors(double_quant):
    from vramplan.torch_nf4.linear import NF4Linear

    out_features, in_features, rank = 192, 128, 8
    run = make_run(method="qlora", double_quant=double_quant, lora_rank=rank, quant_blocksize=64)
    dtypes = resolve_dtypes(run, get_gpu("h100"), get_model("7b"))
    real = NF4Linear.from_linear(torch.nn.Linear(in_features, out_features, bias=False), blocksize=64,
                                 double_quant=double_quant, lora_rank=rank)
    with FakeTensorMode():
        fake = arch.fake_nf4_linear(torch.nn.Linear(in_features, out_features, bias=False), run, dtypes, rank)
    fake_tensors = dict(fake.named_parameters()) | dict(fake.named_buffers())
    real_tensors = dict(real.named_parameters()) | dict(real.named_buffers())
    assert fake_tensors.keys() == real_tensors.keys()
    for name, tensor in real_tensors.items():
        assert (tuple(fake_tensors[name].shape), fake_tensors[name].dtype) == (tuple(tensor.shape), tensor.dtype), name
    real_bytes = sum(_real_bytes(t) for t in list(real.parameters()) + list(real.buffers()))
    tracker = AllocationTracker()
    for t in list(fake.parameters()) + list(fake.buffers()):
        tracker.track(t, "weights")
    assert tracker.current == real_bytes


def test_nf4_forward_saves_only_the_packed_weight_and_one_dequant_temporary():
    run = make_run(method="qlora", lora_rank=4)
    dtypes = resolve_dtypes(run, get_gpu("h100"), get_model("7b"))
    with FakeTensorMode(), arch.cuda_like_kernels():
        layer = arch.fake_nf4_linear(torch.nn.Linear(256, 512, bias=False), run, dtypes, 0)
        x = torch.empty(2, 8, 256, dtype=torch.bfloat16, requires_grad=True)
        tracker = AllocationTracker()
        with tracker:
            tracker.track(x, "inputs")
            tracker.start_phase("forward", "activations")
            out = layer(x)
            tracker.stop()
    inputs, dequant, output = 2 * 8 * 256 * 2, 512 * 256 * 2, 2 * 8 * 512 * 2
    assert tracker.peaks["forward"].bytes == inputs + dequant + output
    assert tracker.current == inputs + output  # the dequantized weight is not saved
    assert out.grad_fn is not None
