"""bitsandbytes as the reference: its CPU ops, with the one known CPU-kernel defect routed around."""
import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")
bnb_functional = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes (>=0.50) is the reference")


def bnb_dequantize(packed, bnb_state):
    """bitsandbytes' 4-bit dequant. Its native CPU kernel (AVX512 path, 0.50.2) indexes absmax per
    row and is wrong when a row's length is not a multiple of the blocksize (blocks straddle rows);
    there, use bitsandbytes' own device-agnostic reference `_dequantize_4bit_compute`, which follows
    the CUDA kernel."""
    if bnb_state.shape[-1] % bnb_state.blocksize == 0:
        return bnb_functional.dequantize_4bit(packed, bnb_state)
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    absmax = bnb_state.absmax
    if bnb_state.nested:
        absmax = bnb_functional.dequantize_blockwise(bnb_state.absmax, bnb_state.state2) + bnb_state.offset
    with torch._dynamo.config.patch(disable=True):  # bnb torch.compiles it; eager is faster for tests
        return _dequantize_4bit_compute(
            packed.reshape(-1), absmax, bnb_state.code, bnb_state.blocksize, bnb_state.shape, bnb_state.dtype
        )
