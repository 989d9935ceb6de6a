"""Laws of the per-rank plan (vramplan.distributed): what each strategy divides, what it adds, and
that one GPU is exactly today's plan."""
from __future__ import annotations

import pytest

from vramplan.distributed.rank_plan import rank_phase_components
from vramplan.distributed.shares import shard_bytes
from vramplan.distributed.tensor_parallel import tensor_parallel_slice
from vramplan.errors import InputError
from vramplan.estimate import make_parallel, make_run, plan, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.memory.parameters import norm_groups, parameter_count
from vramplan.resolve import resolve_model
from vramplan.specs.parallel import ParallelConfig


@pytest.fixture(scope="module")
def llama8b():
    return resolve_model("llama-3.1-8b"), get_gpu("a100-80g")


def _rank(model, gpu, run, **parallel):
    return plan_ranks(model, gpu, run, parallel=make_parallel(**parallel)).worst_rank.breakdown


def _optimizer_phase(model, gpu, run, **parallel):
    """Component bytes of one rank at the optimizer phase."""
    return rank_phase_components(model, gpu, run, make_parallel(**parallel))["optimizer"]


def test_one_gpu_is_todays_plan(llama8b):
    model, gpu = llama8b
    run = make_run(method="lora", seq_len=1024)
    single = plan(model, gpu, run)
    for parallel in (None, ParallelConfig(), make_parallel(gpus=1)):
        cluster = plan_ranks(model, gpu, run, parallel=parallel)
        assert cluster.world_size == 1 and cluster.worst_rank.breakdown == single


def test_fsdp_divides_weights_gradients_and_state_by_n(llama8b):
    model, gpu = llama8b
    run = make_run(method="full", gradient_checkpointing=True)
    whole = plan(model, gpu, run)
    assert whole.peak_phase == "optimizer"
    for n in (2, 4, 8):
        rank = _optimizer_phase(model, gpu, run, gpus=n, strategy="fsdp")
        for name in ("float_weights", "gradients", "optimizer_state"):
            terms = whole.terms[name]
            assert rank[name] == sum(shard_bytes(t["bytes"], n) for t in terms), (name, n)
        assert rank.get("gathered_parameters", 0) == 0  # nothing is gathered for the optimizer step


def test_more_gpus_never_hold_more_model_state(llama8b):
    model, gpu = llama8b
    run = make_run(method="full")
    for strategy in ("zero1", "zero2", "zero3", "fsdp", "fsdp-grad-op"):
        states = []
        for n in (2, 4, 8):
            b = _rank(model, gpu, run, gpus=n, strategy=strategy)
            states.append(sum(b.components()[k] for k in ("float_weights", "gradients", "optimizer_state")))
        assert states == sorted(states, reverse=True) and states[0] > states[-1], strategy


def test_ddp_replicates_and_adds_a_bucket_copy_of_the_gradients(llama8b):
    model, gpu = llama8b
    run = make_run(method="lora")
    single = plan(model, gpu, run)
    rank = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy="ddp")).worst_rank.breakdown
    comps = rank.components()
    for name in ("float_weights", "lora_adapters", "optimizer_state"):
        assert comps[name] == single.components()[name]
    grads = sum(t["bytes"] for t in plan(model, gpu, make_run(method="lora", grad_accum_steps=2)).terms["gradients"])
    assert comps["comm_buckets"] == grads  # every trainable gradient, once more (gradient_as_bucket_view=False)
    assert rank.nccl_buffers_bytes > 0
    assert rank.required_bytes == (rank.peak_allocated_bytes + rank.allocator_reserve_bytes + rank.cuda_context_bytes
                                   + rank.nccl_buffers_bytes)


def test_quantization_state_stays_whole_under_fsdp(llama8b):
    model, gpu = llama8b
    run = make_run(method="qlora")
    single = plan(model, gpu, run).components()
    rank = _rank(model, gpu, run, gpus=4, strategy="fsdp").components()
    assert rank["quant_state"] == single["quant_state"]
    assert rank["quantized_weights"] == pytest.approx(single["quantized_weights"] / 4, rel=1e-3)


def test_zero_stages_shard_in_order(llama8b):
    """ZeRO-1 partitions optimizer state, ZeRO-2 also gradients, ZeRO-3 also parameters."""
    model, gpu = llama8b
    run = make_run(method="full")
    z = {s: _rank(model, gpu, run, gpus=8, strategy=s).components() for s in ("zero1", "zero2", "zero3")}
    assert z["zero1"]["float_weights"] == z["zero2"]["float_weights"] > 4 * z["zero3"]["float_weights"]
    assert z["zero1"]["gradients"] > z["zero2"]["gradients"]
    assert z["zero1"]["optimizer_state"] == z["zero2"]["optimizer_state"] == z["zero3"]["optimizer_state"]


def test_fsdp_grad_op_gathers_every_layer(llama8b):
    model, gpu = llama8b
    run = make_run(method="lora")
    full = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy="fsdp")).worst_rank.breakdown
    grad_op = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy="fsdp-grad-op")).worst_rank.breakdown
    gathered = {t["name"]: t for t in grad_op.terms["gathered_parameters"]}
    every = next(t for name, t in gathered.items() if name.startswith("every decoder layer"))
    assert dict(every["factors"])["layers"] == model.num_hidden_layers
    assert grad_op.peak_allocated_bytes > full.peak_allocated_bytes


def test_hybrid_shards_inside_a_node_only(llama8b):
    model, gpu = llama8b
    run = make_run(method="full")
    hybrid = _rank(model, gpu, run, gpus=4, nodes=2, strategy="fsdp-hybrid").components()
    fsdp4 = _rank(model, gpu, run, gpus=4, strategy="fsdp").components()
    assert hybrid["optimizer_state"] == fsdp4["optimizer_state"]
    assert hybrid["nccl_buffers"] > fsdp4["nccl_buffers"]  # shard and replicate communicators


def test_tensor_parallel_slice_splits_all_but_the_norms():
    model = resolve_model("llama-3.1-70b")
    rank = tensor_parallel_slice(model, 8)
    norms = sum(g.numel * g.count for g in norm_groups(model))
    assert parameter_count(rank) - norms == pytest.approx((parameter_count(model) - norms) / 8, rel=1e-4)
    assert rank.num_key_value_heads == 1 and rank.head_dim == model.head_dim


def test_tensor_parallel_divides_activations_but_not_the_residual_stream():
    model, gpu = resolve_model("llama-3.1-8b"), get_gpu("h100")
    run = make_run(method="lora", seq_len=4096, gradient_checkpointing=False)
    one = plan(model, gpu, run).components()["activations"]
    tp4 = _rank(model, gpu, run, gpus=4, tensor_parallel=4).components()["activations"]
    assert one / 4 < tp4 < one


def test_offload_moves_state_to_the_host(llama8b):
    model, gpu = llama8b
    run = make_run(method="full")
    kept = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy="zero2"))
    moved = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy="zero2", offload="optimizer"))
    assert moved.worst_rank.breakdown.components()["optimizer_state"] == 0
    assert kept.host.components.get("offloaded_optimizer_state", 0) == 0
    # fp32 master + fp32 gradients + AdamW's two moments: 16 B per parameter over the node's 4 ranks
    assert moved.host.components["offloaded_optimizer_state"] == pytest.approx(16 * parameter_count(model), rel=1e-3)
    fsdp = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy="fsdp", offload="params"))
    comps = fsdp.worst_rank.breakdown.components()
    assert comps["float_weights"] == comps["optimizer_state"] == comps["gradients"] == 0
    assert fsdp.host.components["offloaded_parameters"] > 0


def test_host_needs_the_larger_of_loading_and_training(llama8b):
    model, gpu = llama8b
    cluster = plan_ranks(model, gpu, make_run(method="full"),
                         parallel=make_parallel(gpus=8, strategy="zero2", offload="optimizer"), host_ram_bytes=2**40)
    host = cluster.host
    assert host.required_bytes == max(host.components["loading_spike"], host.training_bytes)
    assert host.fits is True
    small = plan_ranks(model, gpu, make_run(method="full"),
                       parallel=make_parallel(gpus=8, strategy="zero2", offload="optimizer"), host_ram_bytes=2**30)
    assert small.host.fits is False and not small.fits and small.worst_rank.breakdown.fits


@pytest.mark.parametrize("fields, run, field", [
    ({"gpus": 4, "strategy": "fsdp"}, {"method": "inference"}, "strategy"),
    ({"gpus": 4, "strategy": "zero3"}, {"method": "qlora", "weight_format": "int8"}, "weight_format"),
    ({"gpus": 4, "tensor_parallel": 3}, {"method": "lora"}, "input"),
    ({"gpus": 8, "tensor_parallel": 8}, {"method": "qlora"}, "tensor_parallel"),
])
def test_what_the_wrappers_cannot_run_is_refused(llama8b, fields, run, field):
    model, gpu = llama8b
    with pytest.raises(InputError) as caught:
        plan_ranks(model, gpu, make_run(**run), parallel=make_parallel(**fields))
    assert caught.value.field == field


@pytest.mark.parametrize("fields", [
    {"gpus": 2, "strategy": "single"}, {"gpus": 4, "strategy": "fsdp", "offload": "optimizer"},
    {"gpus": 2, "strategy": "zero2", "offload": "params"}, {"gpus": 2, "strategy": "ddp", "offload": "optimizer"},
    {"gpus": 2, "strategy": "zero2", "offload": "optimizer", "offload_device": "nvme"},
    {"gpus": 2, "reduce_bucket_size": -1},
])
def test_inconsistent_layouts_are_refused(fields):
    with pytest.raises(InputError):
        make_parallel(**fields)


@pytest.mark.parametrize("stack, method, strategy, efficient, copies", [
    ("transformers=5.24", "lora", "fsdp", True, 1),    # 16-bit checkpoint stays mmap'd: one shared page-cache copy
    ("transformers=5.24", "full", "fsdp", True, 4),    # fp32 conversion: an anonymous copy in every rank
    ("transformers=4.57", "lora", "fsdp", True, 1),    # 4.x cpu_ram_efficient_loading: rank 0 only
    ("transformers=4.57", "lora", "fsdp", False, 4),
    ("transformers=4.57", "lora", "ddp", True, 4),
])
def test_loading_spike_follows_the_transformers_version(llama8b, stack, method, strategy, efficient, copies):
    model, gpu = llama8b
    run = make_run(method=method, stack=stack)
    host = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=4, strategy=strategy,
                                                              cpu_ram_efficient_loading=efficient)).host
    per_copy = parameter_count(model) * (4 if method == "full" else 2)
    assert host.components["loading_spike"] == copies * per_copy


def test_rank_0_is_its_own_role_when_it_alone_reads_the_checkpoint(llama8b):
    model, gpu = llama8b
    cluster = plan_ranks(model, gpu, make_run(method="lora", stack="transformers=4.57"),
                         parallel=make_parallel(gpus=4, strategy="fsdp"))
    assert [role.name for role in cluster.ranks] == ["rank 0", "ranks 1-3"]
    assert cluster.ranks[0].duty and cluster.ranks[0].breakdown == cluster.ranks[1].breakdown
    shared = plan_ranks(model, gpu, make_run(method="lora"), parallel=make_parallel(gpus=4, strategy="fsdp"))
    assert [role.name for role in shared.ranks] == ["ranks 0-3"]
