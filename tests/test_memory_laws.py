"""Laws the memory model must obey for every model, GPU and run (hypothesis)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vramplan.catalog import list_models
from vramplan.estimate import make_run, plan
from vramplan.gpus import list_gpus
from vramplan.memory.plan import ALLOCATED_COMPONENTS, peak_allocated_bytes, phase_components

MODELS = list_models()
GPUS = [g for g in list_gpus() if g.vendor == "nvidia"]

models = st.sampled_from(MODELS)
gpus = st.sampled_from(GPUS)
training_methods = st.sampled_from(["qlora", "lora", "full"])
optimizers = st.sampled_from(["adamw", "adamw_fused", "adamw_8bit", "paged_adamw", "paged_adamw_8bit",
                              "sgd", "sgd_momentum", "adafactor"])
runs = st.builds(
    lambda method, opt, batch, seq, rank, gc, attention, loss, accum, targets: make_run(
        method=method, optimizer=opt, micro_batch_size=batch, seq_len=seq, lora_rank=rank,
        gradient_checkpointing=gc, attention=attention, loss_impl=loss, grad_accum_steps=accum,
        lora_targets=targets),
    st.sampled_from(["qlora", "lora", "full", "inference"]), optimizers,
    st.integers(1, 64), st.integers(1, 16384), st.integers(1, 512), st.booleans(),
    st.sampled_from(["sdpa", "eager", "flash_attention_2"]), st.sampled_from(["standard", "chunked"]),
    st.integers(1, 8), st.sampled_from(["all-linear", "q_proj,v_proj"]),
)


def _targets_exist(model, run):
    return "q_proj" in {lin.name for lin in model.layer_linears()} or "all-linear" in run.lora_targets


@pytest.mark.parametrize("field, most", [("micro_batch_size", 64), ("seq_len", 8192), ("lora_rank", 256)])
@given(model=models, gpu=gpus, run=runs, data=st.data())
def test_peak_never_decreases_as_batch_sequence_or_rank_grows(field, most, model, gpu, run, data):
    if not _targets_exist(model, run):
        return
    extra = data.draw(st.integers(1, most))
    small = plan(model, gpu, run).peak_allocated_bytes
    larger = plan(model, gpu, run.model_copy(update={field: getattr(run, field) + extra}))
    assert larger.peak_allocated_bytes >= small


@given(models, gpus, runs, st.integers(1, 16))
def test_peak_never_decreases_as_layers_grow(model, gpu, run, extra):
    if not _targets_exist(model, run):
        return
    deeper = model.model_copy(update={"num_hidden_layers": model.num_hidden_layers + extra})
    assert plan(deeper, gpu, run).peak_allocated_bytes >= plan(model, gpu, run).peak_allocated_bytes


@given(models, st.integers(1, 16), st.integers(1, 8192))
def test_more_bits_per_weight_never_need_less_memory(model, batch, seq):
    gpu = GPUS[-1]
    # within one storage family; across families the kept-float embeddings differ
    for order in (["nf4", "int8", "bf16", "fp32"],
                  ["gguf-q4_0", "gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k", "gguf-q8_0"]):
        peaks = [plan(model, gpu, make_run(method="inference", weight_format=fmt, micro_batch_size=batch,
                                           seq_len=seq)).peak_allocated_bytes for fmt in order]
        assert peaks == sorted(peaks), order


@given(models, gpus, runs, st.sampled_from([32, 64, 128, 256, 1024]))
def test_double_quant_never_costs_more_than_single(model, gpu, run, blocksize):
    if run.method != "qlora" or not _targets_exist(model, run):
        return
    run = run.model_copy(update={"quant_blocksize": blocksize})
    double = plan(model, gpu, run.model_copy(update={"double_quant": True}))
    single = plan(model, gpu, run.model_copy(update={"double_quant": False}))
    assert double.quant_state <= single.quant_state
    assert double.peak_allocated_bytes <= single.peak_allocated_bytes


@given(models, gpus, runs)
def test_a_plan_said_to_fit_stays_under_the_gpu(model, gpu, run):
    if not _targets_exist(model, run):
        return
    breakdown = plan(model, gpu, run)
    if breakdown.fits:
        assert breakdown.peak_allocated_bytes <= breakdown.required_bytes <= gpu.capacity_bytes
    assert breakdown.headroom_bytes == gpu.capacity_bytes - breakdown.required_bytes


@given(models, gpus, training_methods)
def test_no_nan_negative_or_overflow_at_extreme_sizes(model, gpu, method):
    run = make_run(method=method, micro_batch_size=4096, seq_len=1_048_576, attention="eager", lora_rank=4096)
    breakdown = plan(model, gpu, run)
    for name, value in breakdown.components().items():
        assert isinstance(value, int) and value >= 0, name
    assert not breakdown.fits
    # the vectorized path agrees and neither overflows nor goes NaN
    arrays = peak_allocated_bytes(model, gpu, run, micro_batch_size=np.array([1, 4096]),
                                  seq_len=np.array([1, 1_048_576]), lora_rank=np.array([1, 4096]))
    assert np.all(np.isfinite(arrays)) and np.all(arrays > 0)
    assert math.isclose(arrays[1], breakdown.peak_allocated_bytes, rel_tol=1e-12)


@given(models, gpus, runs)
def test_vectorized_sweep_equals_one_plan_per_point(model, gpu, run):
    if not _targets_exist(model, run):
        return
    batches = np.array([1, 3, 8])
    seqs = np.array([128, 1000, 4096])
    ranks = np.array([4, 16, 64])
    phases = phase_components(model, gpu, run, micro_batch_size=batches, seq_len=seqs, lora_rank=ranks)
    for index in range(3):
        point = run.model_copy(update={"micro_batch_size": int(batches[index]), "seq_len": int(seqs[index]),
                                       "lora_rank": int(ranks[index])})
        scalar = phase_components(model, gpu, point)
        for phase, components in scalar.items():
            for name in ALLOCATED_COMPONENTS:
                vector_value = np.broadcast_to(phases[phase].get(name, 0), (3,))[index]
                assert vector_value == components.get(name, 0), (phase, name)
