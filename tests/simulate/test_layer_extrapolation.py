"""Simulating 2 and 3 decoder layers and extrapolating equals simulating all of them."""
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramplan.catalog import get_model  # noqa: E402
from vramplan.estimate import make_run  # noqa: E402
from vramplan.gpus import get_gpu  # noqa: E402
from vramplan.memory.dtypes import resolve_dtypes  # noqa: E402
from vramplan.simulate import simulate  # noqa: E402
from vramplan.simulate.engine import _simulate_layers  # noqa: E402
from vramplan.specs import ModelSpec  # noqa: E402

SMALL = ModelSpec(name="small-gqa", hidden_size=256, intermediate_size=704, num_hidden_layers=5,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=1000)


@pytest.mark.parametrize("fields", [
    dict(seq_len=64, gradient_checkpointing=True),
    dict(seq_len=64, micro_batch_size=2, gradient_checkpointing=False, lora_rank=4),
    dict(method="inference", seq_len=32, max_new_tokens=8),
])
def test_extrapolated_phase_peaks_equal_a_full_depth_simulation(fields):
    gpu, run = get_gpu("h100"), make_run(**fields)
    extrapolated = simulate(SMALL, gpu, run)
    direct = _simulate_layers(SMALL, gpu, run, resolve_dtypes(run, gpu, SMALL), SMALL.num_hidden_layers)
    assert extrapolated.layers_simulated == (2, 3)
    assert extrapolated.phase_peaks == direct.phase_peaks
    assert extrapolated.phase_categories == direct.phase_categories


def test_extrapolation_counts_gemma2_masks_once_per_layer_type():
    """Gemma-2 alternates sliding and global layers and builds one eager mask per type."""
    small_gemma = get_model("gemma-2-2b").model_copy(update=dict(
        name="small-gemma2", hidden_size=256, intermediate_size=512, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=1000))
    gpu, run = get_gpu("h100"), make_run(seq_len=256, gradient_checkpointing=True)
    extrapolated = simulate(small_gemma, gpu, run)
    direct = _simulate_layers(small_gemma, gpu, run, resolve_dtypes(run, gpu, small_gemma), small_gemma.num_hidden_layers)
    assert extrapolated.phase_peaks == direct.phase_peaks


def test_a_70b_config_simulates_well_under_a_minute():
    started = time.perf_counter()
    result = simulate(get_model("llama-3.1-70b"), get_gpu("h100"), make_run(seq_len=512))
    assert time.perf_counter() - started < 60
    assert result.peak_bytes > 40 * 2**30
    assert set(result.categories_at_peak) >= {"quantized_weights", "quant_state", "lora_adapters",
                                              "optimizer_state", "activations"}


@pytest.mark.parametrize("fields", [
    dict(method="inference", seq_len=96, max_new_tokens=8),
    dict(method="inference", seq_len=96, max_new_tokens=8, attention="eager"),
    dict(seq_len=96, gradient_checkpointing=False, attention="eager"),
])
def test_extrapolation_of_gemma3_local_and_global_layers_equals_a_full_depth_simulation(fields):
    """Gemma-3 has 5 local layers to 1 global: 2 and 3 layers of the default pattern would all be
    local, so the windowed KV cache of 13 layers (11 local, 2 global) needs one step of each type."""
    small_gemma3 = get_model("gemma-3-1b").model_copy(update=dict(
        name="small-gemma3", hidden_size=256, intermediate_size=512, num_hidden_layers=13,
        num_attention_heads=4, num_key_value_heads=1, head_dim=64, vocab_size=1000, sliding_window=32))
    gpu, run = get_gpu("h100"), make_run(**fields)
    extrapolated = simulate(small_gemma3, gpu, run)
    direct = _simulate_layers(small_gemma3, gpu, run, resolve_dtypes(run, gpu, small_gemma3), small_gemma3.num_hidden_layers)
    assert extrapolated.phase_peaks == direct.phase_peaks
    assert extrapolated.phase_categories == direct.phase_categories
