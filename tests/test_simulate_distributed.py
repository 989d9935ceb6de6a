"""The distributed simulator: torch's real FSDP2 `fully_shard` as rank k of N on fake tensors, no GPU."""
import functools
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramplan.errors import InputError  # noqa: E402
from vramplan.estimate import make_parallel, make_run  # noqa: E402
from vramplan.gpus import get_gpu  # noqa: E402
from vramplan.memory.dtypes import resolve_dtypes  # noqa: E402
from vramplan.simulate import simulate  # noqa: E402
from vramplan.simulate.distributed import Fsdp2Wrapper, fake_process_group, simulate_ranks  # noqa: E402
from vramplan.simulate.engine import _fold_positions, _simulate_layers  # noqa: E402
from vramplan.simulate.tracker import AllocationTracker, cuda_block_bytes  # noqa: E402
from vramplan.specs import ModelSpec  # noqa: E402

TINY = ModelSpec(name="tiny-gqa", hidden_size=256, intermediate_size=704, num_hidden_layers=3,
                 num_attention_heads=8, num_key_value_heads=2, vocab_size=1000)
GPU = get_gpu("h100")
RUNS = {
    "full": dict(method="full", seq_len=64, gradient_checkpointing=True),
    "lora": dict(method="lora", seq_len=64, gradient_checkpointing=True, lora_rank=8),
}


def fsdp2(gpus: int):
    return make_parallel(gpus=gpus, strategy="fsdp", fsdp_version=2)


@functools.lru_cache(maxsize=None)
def ranks(method: str, gpus: int, which: tuple[int, ...] = (0,)):
    return simulate_ranks(TINY, GPU, make_run(**RUNS[method]), fsdp2(gpus), ranks=which)


def parameter_shapes(method: str):
    """(shape, bytes per element, is LoRA) of every parameter of TINY as the simulator builds it."""
    from vramplan.simulate import architecture as arch
    from vramplan.simulate.engine import prepare

    run = make_run(**RUNS[method])
    dtypes = resolve_dtypes(run, GPU, TINY)
    with torch.device("meta"):
        model = arch.build_model(TINY, TINY.num_hidden_layers, run, dtypes)
        prepare(model, TINY, run, dtypes)
    return [(tuple(p.shape), p.element_size(), "lora_" in name) for name, p in model.named_parameters()]


def buffer_bytes(method: str) -> int:
    """The model's buffers (rotary inv_freq): FSDP2 leaves them whole on every rank."""
    from vramplan.simulate import architecture as arch

    run = make_run(**RUNS[method])
    with torch.device("meta"):
        model = arch.build_model(TINY, TINY.num_hidden_layers, run, resolve_dtypes(run, GPU, TINY))
    return sum(cuda_block_bytes(b.numel() * b.element_size()) for b in model.buffers())


def sharded_bytes(shape, element_bytes: int, world: int) -> int:
    """FSDP2's shard of one parameter: dim 0 padded to a multiple of N, ceil(dim0 / N) rows on every rank."""
    rows = math.ceil(shape[0] / world)
    return cuda_block_bytes(rows * math.prod(shape[1:]) * element_bytes)


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_each_rank_holds_its_padded_shard_of_every_parameter(method, gpus):
    shapes = parameter_shapes(method)
    result = ranks(method, gpus).ranks[0]
    at_step = result.phase_categories["optimizer"]  # every unit resharded: only the shards are live
    base = sum(sharded_bytes(s, b, gpus) for s, b, lora in shapes if not lora) + buffer_bytes(method)
    adapters = sum(sharded_bytes(s, b, gpus) for s, b, lora in shapes if lora)
    assert at_step["float_weights"] == base
    assert at_step.get("lora_adapters", 0) == adapters
    assert at_step.get("gathered_parameters", 0) == 0


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_optimizer_state_and_gradients_are_one_nth_within_padding(method, gpus):
    single = simulate(TINY, GPU, make_run(**RUNS[method])).phase_categories["optimizer"]
    sharded = ranks(method, gpus).ranks[0].phase_categories["optimizer"]
    tensors = len([1 for _, _, lora in parameter_shapes(method) if lora or method == "full"])
    for name in ("optimizer_state", "gradients"):
        padding = 2 * tensors * (cuda_block_bytes(1) + 4 * TINY.hidden_size)  # <= one row and one block per tensor
        assert single[name] / gpus <= sharded[name] <= single[name] / gpus + padding, name


@pytest.mark.parametrize("method", ["full", "lora"])
def test_one_rank_fsdp2_steps_like_the_single_gpu_simulator_at_the_optimizer(method):
    """N = 1: shards are whole parameters, so the optimizer step holds what one GPU holds."""
    run = make_run(**RUNS[method])
    single = simulate(TINY, GPU, run)
    alone = simulate_ranks(TINY, GPU, run, fsdp2(1)).ranks[0]
    assert alone.phase_peaks["optimizer"] == single.phase_peaks["optimizer"]
    assert alone.phase_categories["optimizer"] == {**single.phase_categories["optimizer"], "gathered_parameters": 0}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_every_rank_holds_the_same_bytes_when_n_divides_every_dimension(method):
    both = ranks(method, 4, (0, 3))
    assert both.ranks[0].phase_peaks == both.ranks[3].phase_peaks
    assert both.ranks[0].phase_categories == both.ranks[3].phase_categories


@pytest.mark.parametrize("method", ["full", "lora"])
def test_rank_0_is_the_worst_rank_when_n_does_not_divide(method):
    """3 ranks, vocab 1000 and LoRA rank 8: every rank stores padded shards, but the last rank's
    optimizer state is built from its shorter (unpadded) local shard."""
    three = ranks(method, 3, (0, 1, 2))
    first, middle, last = (three.ranks[k] for k in (0, 1, 2))
    assert first.phase_categories == middle.phase_categories
    assert last.phase_categories["optimizer"]["float_weights"] == first.phase_categories["optimizer"]["float_weights"]
    assert last.phase_categories["optimizer"]["optimizer_state"] < first.phase_categories["optimizer"]["optimizer_state"]
    assert all(last.phase_peaks[phase] < first.phase_peaks[phase] for phase in first.phase_peaks)
    assert three.worst_rank is first


@pytest.mark.parametrize("method", ["full", "lora"])
def test_sharding_lowers_every_phase_peak_as_ranks_grow(method):
    peaks = [ranks(method, gpus).ranks[0].phase_peaks for gpus in (2, 4, 8)]
    for phase in peaks[0]:
        assert peaks[0][phase] >= peaks[1][phase] >= peaks[2][phase], phase


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_unit_is_gathered_in_the_compute_dtype_during_forward(method):
    """A decoder layer's unsharded parameters are bf16 copies (MixedPrecisionPolicy param_dtype) that
    exist only while the unit runs: gathered bytes at the forward peak are at least one layer's."""
    shapes = parameter_shapes(method)
    per_layer = sum(math.prod(s) for s, _, _ in shapes) - 2 * TINY.vocab_size * TINY.hidden_size
    per_layer = per_layer // TINY.num_hidden_layers  # embeddings, head and final norm apart (norm: rounding)
    gathered = ranks(method, 4).ranks[0].phase_categories["forward"]["gathered_parameters"]
    assert 2 * per_layer <= gathered < 2 * 2 * per_layer + 4 * 2 * TINY.vocab_size * TINY.hidden_size


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_extrapolated_ranks_equal_a_full_depth_fsdp2_simulation(method):
    six = TINY.model_copy(update=dict(name="tiny-6", num_hidden_layers=6))
    run = make_run(**RUNS[method])
    dtypes = resolve_dtypes(run, GPU, six)
    extrapolated = simulate_ranks(six, GPU, run, fsdp2(4)).ranks[0]
    with fake_process_group(0, 4) as mesh:
        direct, _ = _fold_positions(_simulate_layers(six, GPU, run, dtypes, 6, wrapper=Fsdp2Wrapper(mesh, run, dtypes)), {})
    assert extrapolated.layers_simulated == (3, 4)
    assert extrapolated.phase_peaks == direct.phase_peaks
    assert extrapolated.phase_categories == direct.phase_categories


@pytest.mark.parametrize("fields, message", [
    (dict(gpus=4, strategy="ddp"), "FSDP2"),
    (dict(gpus=4, strategy="fsdp", fsdp_version=1), "FSDP2"),
    (dict(gpus=4, strategy="zero3"), "FSDP2"),
    (dict(gpus=4, strategy="fsdp", fsdp_version=2, tensor_parallel=2), "T = 1"),
    (dict(gpus=4, strategy="fsdp", fsdp_version=2, offload="params"), "offload"),
])
def test_strategies_other_than_fsdp2_are_refused(fields, message):
    with pytest.raises(InputError, match=message):
        simulate_ranks(TINY, GPU, make_run(**RUNS["full"]), make_parallel(**fields))


def test_inference_is_refused():
    with pytest.raises(InputError, match="method"):
        simulate_ranks(TINY, GPU, make_run(method="inference"), fsdp2(2))


def test_qlora_keeps_the_4bit_codes_whole_on_every_rank_and_shards_the_rest():
    """accelerate 1.16 leaves uint8 Params4bit out of FSDP2 (ignored_params, fsdp_utils.py): the packed
    codes and their quant state are replicated; LoRA weights, their state and the float rest are sharded."""
    run = make_run(method="qlora", seq_len=64, gradient_checkpointing=True, lora_rank=8)
    single = simulate(TINY, GPU, run).phase_categories["optimizer"]
    sharded = simulate_ranks(TINY, GPU, run, fsdp2(4)).ranks[0].phase_categories["optimizer"]
    assert sharded["quantized_weights"] == single["quantized_weights"]
    assert sharded["quant_state"] == single["quant_state"]
    for name in ("lora_adapters", "optimizer_state", "float_weights"):
        assert single[name] / 4 <= sharded[name] < single[name] / 4 + single[name] / 8, name


def test_ranks_outside_the_world_are_refused():
    with pytest.raises(InputError, match="ranks"):
        simulate_ranks(TINY, GPU, make_run(**RUNS["full"]), fsdp2(2), ranks=(2,))


def test_a_resized_storage_counts_its_new_size_and_peaks_keep_the_old_one():
    """FSDP2 frees an unsharded parameter by resizing its storage to 0 and re-grows it for the next
    all-gather; the live set snapshotted at a peak keeps the size the storage had then."""
    tracker = AllocationTracker()
    with torch._subclasses.fake_tensor.FakeTensorMode(), tracker:
        tracker.start_phase("forward")
        gathered = torch.empty(1024, dtype=torch.bfloat16)
        tracker.category = "gathered_parameters"
        tracker.recategorize(gathered, "gathered_parameters")
        gathered.untyped_storage().resize_(0)
        tracker.resized(gathered)
        assert tracker.current == 0
        tracker.start_phase("backward")
        gathered.untyped_storage().resize_(2048)
        tracker.resized(gathered)
        assert tracker.current == 2048
        tracker.stop()
    assert tracker.peaks["forward"].bytes == 2048
    assert tracker.phase_categories("forward") == {"gathered_parameters": 2048}
    assert tracker.phase_categories("backward") == {"gathered_parameters": 2048}


@pytest.mark.slow
def test_extrapolated_ranks_of_alternating_attention_layers_equal_a_full_depth_simulation():
    """Gemma-2 alternates sliding and global layers: one extra layer of each type, from 3 layers."""
    from vramplan.catalog import get_model

    small_gemma = get_model("gemma-2-2b").model_copy(update=dict(
        name="small-gemma2", hidden_size=256, intermediate_size=512, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=1000))
    run = make_run(seq_len=256, gradient_checkpointing=True)
    dtypes = resolve_dtypes(run, GPU, small_gemma)
    extrapolated = simulate_ranks(small_gemma, GPU, run, fsdp2(2)).ranks[0]
    with fake_process_group(0, 2) as mesh:
        direct, _ = _fold_positions(
            _simulate_layers(small_gemma, GPU, run, dtypes, 6, wrapper=Fsdp2Wrapper(mesh, run, dtypes)), {})
    assert extrapolated.phase_peaks == direct.phase_peaks
    assert extrapolated.phase_categories == direct.phase_categories


@pytest.mark.slow
@pytest.mark.parametrize("wrap_policy", ["accelerate", "layers-and-root"])
def test_extrapolation_follows_the_moment_that_peaks_at_full_depth(wrap_policy):
    """Llama-2 7B LoRA on 4 ranks: with one root unit the forward peaks at layer 1's copy-out at 3 and
    4 layers but at the last layer at 32; extrapolating each moment alone matches all 32 layers."""
    from vramplan.catalog import get_model

    model = get_model("llama-2-7b")
    run = make_run(method="lora", seq_len=1024, gradient_checkpointing=True, lora_rank=16)
    dtypes = resolve_dtypes(run, get_gpu("h200"), model)
    extrapolated = simulate_ranks(model, get_gpu("h200"), run, fsdp2(4), wrap_policy=wrap_policy).ranks[0]
    with fake_process_group(0, 4) as mesh:
        wrapper = Fsdp2Wrapper(mesh, run, dtypes, wrap_policy)
        direct, _ = _fold_positions(_simulate_layers(model, get_gpu("h200"), run, dtypes, 32, wrapper=wrapper), {})
    assert extrapolated.phase_peaks == direct.phase_peaks


def test_peft_policy_under_fsdp2_leaves_every_layer_in_the_root_unit():
    """accelerate 1.16's FSDP2 path ignores peft's `_or_policy` (the Trainer's policy for a peft model):
    no decoder layer is its own unit, so the whole base is gathered in forward, beside its flat all-gather output."""
    run = make_run(**RUNS["lora"])
    whole_base = sum(math.prod(s) * 2 for s, _, lora in parameter_shapes("lora") if not lora)  # bf16
    layered = simulate_ranks(TINY, GPU, run, fsdp2(4)).ranks[0].phase_categories["forward"]
    rooted = simulate_ranks(TINY, GPU, run, fsdp2(4), wrap_policy="accelerate-peft").ranks[0].phase_categories["forward"]
    assert layered["gathered_parameters"] < whole_base <= rooted["gathered_parameters"]


def test_lora_layers_as_their_own_units_are_refused():
    with pytest.raises(InputError, match="fsdp_wrap"):
        simulate_ranks(TINY, GPU, make_run(**RUNS["lora"]),
                       make_parallel(gpus=2, strategy="fsdp", fsdp_version=2, fsdp_wrap="decoder-layer+lora"))
