"""Multi-GPU searches: the fewest GPUs is the smallest count that fits, the cheapest strategy fits and
nothing ordered before it does, the communication volumes keep ZeRO's ratios, and the grid is plan_ranks."""
from __future__ import annotations

import time

import pytest

from vramplan.distributed.comm_volume import comm_volume
from vramplan.distributed.solve import (SHARDED_STRATEGIES, cheapest_strategy, fewest_gpus, layout_for, max_per_rank,
                                        ranked_strategies, strategy_candidates, strategy_grid, with_layout,
                                        world_layouts)
from vramplan.errors import InputError
from vramplan.estimate import make_parallel, make_run, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model


@pytest.fixture(scope="module")
def big():
    return resolve_model("llama-3.1-70b"), get_gpu("a100-40g")


@pytest.fixture(scope="module")
def small():
    return resolve_model("llama-3.1-8b"), get_gpu("a100-40g")


def test_world_layouts_search_one_node_up_to_eight_then_whole_nodes():
    layouts = world_layouts(make_parallel(strategy="fsdp"), max_world=32)
    assert [(p.gpus, p.nodes) for p in layouts] == [(n, 1) for n in range(1, 9)] + [(8, 2), (8, 3), (8, 4)]
    assert all(p.resolved_strategy == "fsdp" for p in layouts)
    with_tp = world_layouts(make_parallel(gpus=2, tensor_parallel=2, strategy="fsdp"), max_world=8)
    assert [p.gpus for p in with_tp] == [2, 4, 6, 8]  # counts T does not divide are skipped


@pytest.mark.parametrize("method, strategy, offload", [("lora", "fsdp", "none"), ("lora", "zero3", "none"),
                                                       ("full", "zero3", "optimizer"), ("qlora", "fsdp", "none"),
                                                       ("full", "fsdp", "none")])
def test_fewest_gpus_fits_and_every_searched_count_below_does_not(big, method, strategy, offload):
    model, gpu = big
    run = make_run(method=method)
    parallel = make_parallel(gpus=2, strategy=strategy, offload=offload)
    found = fewest_gpus(model, gpu, run, parallel)
    assert found is not None
    again = plan_ranks(model, gpu, run, parallel=found.parallel)
    assert again == found.cluster and again.fits
    assert (found.parallel.resolved_strategy, found.parallel.offload) == (strategy, offload)
    below = [p for p in world_layouts(parallel) if p.world_size < found.world_size]
    assert below and not any(plan_ranks(model, gpu, run, parallel=p).fits for p in below)


def test_fewest_gpus_is_none_when_no_count_fits_and_respects_the_host(big):
    model, gpu = big
    run = make_run(method="lora")
    assert fewest_gpus(model, gpu, run, make_parallel(gpus=2, strategy="ddp")) is None  # DDP never shards
    fsdp = make_parallel(gpus=2, strategy="fsdp")
    gpus_only = fewest_gpus(model, gpu, run, fsdp)
    roomy = fewest_gpus(model, gpu, run, fsdp, host_ram_bytes=gpus_only.cluster.host.required_bytes)
    assert roomy.world_size == gpus_only.world_size
    assert fewest_gpus(model, gpu, run, fsdp, host_ram_bytes=2**30, max_world=8) is None


def test_fewest_gpus_passes_on_a_strategy_that_cannot_run_the_model(small):
    model, gpu = small
    with pytest.raises(InputError):
        fewest_gpus(model, gpu, make_run(method="inference"), make_parallel(gpus=2, strategy="fsdp"))


@pytest.mark.parametrize("method, gpus", [("lora", 4), ("full", 8), ("qlora", 2)])
def test_cheapest_strategy_fits_and_no_candidate_ordered_before_it_fits(big, method, gpus):
    model, gpu = big
    run = make_run(method=method)
    parallel = make_parallel(gpus=gpus, strategy="fsdp")
    ranked = ranked_strategies(model, gpu, run, parallel)
    keys = [item.volume.order_key for item in ranked]
    assert keys == sorted(keys)
    best = cheapest_strategy(model, gpu, run, parallel)
    assert best is not None and plan_ranks(model, gpu, run, parallel=best.parallel).fits
    before = ranked[:ranked.index(best)]
    assert not any(item.fits for item in before)
    assert all(item.volume.order_key <= best.volume.order_key for item in before)
    assert (best.parallel.gpus, best.parallel.nodes) == (gpus, 1)


def test_offloading_layouts_rank_after_every_layout_without_offload(small):
    model, gpu = small
    ranked = ranked_strategies(model, gpu, make_run(method="full"), make_parallel(gpus=8, nodes=2, strategy="fsdp"))
    offloads = [item.parallel.offload != "none" for item in ranked]
    assert offloads == sorted(offloads) and any(offloads) and not all(offloads)
    assert all(item.volume.pcie_bytes > 0 for item in ranked if item.parallel.offload != "none")


def test_strategy_candidates_are_valid_and_hybrid_only_across_nodes():
    one_node = {(p.resolved_strategy, p.offload) for p in strategy_candidates(make_parallel(gpus=4, strategy="fsdp"))}
    assert ("fsdp-hybrid", "none") not in one_node
    assert {("zero3", "params"), ("zero2", "optimizer"), ("fsdp", "params"), ("ddp", "none")} <= one_node
    assert ("zero2", "params") not in one_node and ("ddp", "optimizer") not in one_node
    two_nodes = {p.resolved_strategy for p in strategy_candidates(make_parallel(gpus=8, nodes=2, strategy="fsdp"))}
    assert "fsdp-hybrid" in two_nodes


def test_comm_volumes_keep_zero_papers_ratios_for_pure_16bit_full_fine_tuning(small):
    model, gpu = small
    run = make_run(method="full", full_precision="pure")
    volume = {s: comm_volume(model, gpu, run, make_parallel(gpus=8, strategy=s)).network_bytes
              for s in ("ddp", "zero1", "zero2", "zero3", "fsdp-grad-op")}
    assert volume["ddp"] == volume["zero1"] == volume["zero2"]  # "P_os and P_os+g incur no additional communication"
    assert abs(volume["zero3"] - 1.5 * volume["ddp"]) <= 2  # 3 Psi: 1.5x DDP (floors of two terms)
    assert abs(volume["fsdp-grad-op"] - volume["ddp"]) <= 2  # one all-gather + one reduce-scatter
    fsdp = comm_volume(model, gpu, run, make_parallel(gpus=8, strategy="fsdp")).network_bytes
    assert volume["fsdp-grad-op"] < fsdp < volume["zero3"]  # the root is not gathered again in backward


def test_comm_volume_of_lora_counts_the_frozen_base_gathered_by_sharding(small):
    model, gpu = small
    run = make_run(method="lora")
    ddp = comm_volume(model, gpu, run, make_parallel(gpus=4, strategy="ddp"))
    fsdp = comm_volume(model, gpu, run, make_parallel(gpus=4, strategy="fsdp"))
    assert fsdp.network_bytes > 50 * ddp.network_bytes
    assert comm_volume(model, gpu, make_run(method="inference"), make_parallel(gpus=4)).network_bytes == 0


def test_hybrid_sends_only_the_gradient_shard_across_nodes(small):
    model, gpu = small
    run = make_run(method="full")
    hybrid = comm_volume(model, gpu, run, make_parallel(gpus=8, nodes=2, strategy="fsdp-hybrid"))
    fsdp = comm_volume(model, gpu, run, make_parallel(gpus=8, nodes=2, strategy="fsdp"))
    assert hybrid.inter_node_bytes < fsdp.inter_node_bytes / 10
    assert fsdp.inter_node_bytes == fsdp.network_bytes
    assert comm_volume(model, gpu, run, make_parallel(gpus=8, strategy="fsdp")).inter_node_bytes == 0


def test_strategy_grid_rows_agree_with_plan_ranks_and_run_fast(big):
    model, gpu = big
    run = make_run(method="lora")
    counts = [1, 2, 4, 8, 16, 32]
    start = time.perf_counter()
    rows = strategy_grid(model, gpu, run, SHARDED_STRATEGIES, counts, host_ram_bytes=1 << 40)
    assert time.perf_counter() - start < 2.0
    assert [(row.strategy, row.world_size) for row in rows] == [(s, n) for s in SHARDED_STRATEGIES for n in counts]
    for row in rows:
        layout = layout_for(with_layout(make_parallel(), strategy=row.strategy), row.world_size)
        cluster = plan_ranks(model, gpu, run, parallel=layout, host_ram_bytes=1 << 40)
        worst = cluster.worst_rank.breakdown
        assert (row.gpus, row.nodes) == (layout.gpus, layout.nodes)
        assert (row.required_bytes, row.headroom_bytes, row.host_fits) == \
            (worst.required_bytes, worst.headroom_bytes, cluster.host.fits)
        assert row.fits == all(role.breakdown.fits for role in cluster.ranks) and not row.reason


def test_strategy_grid_names_what_cannot_run(small):
    model, gpu = small
    rows = strategy_grid(model, gpu, make_run(method="inference"), ["fsdp", "ddp"], [2])
    assert rows[0].required_bytes is None and not rows[0].fits and "inference" in rows[0].reason
    assert rows[1].required_bytes is not None and not rows[1].reason
    offload_ddp = strategy_grid(model, gpu, make_run(), ["ddp"], [2], parallel=make_parallel(gpus=2, strategy="zero3",
                                                                                                offload="optimizer"))
    assert offload_ddp[0].reason and offload_ddp[0].required_bytes is None


@pytest.mark.parametrize("dimension, field, strategy", [("batch", "micro_batch_size", "fsdp"),
                                                        ("seq", "seq_len", "zero3"), ("rank", "lora_rank", "fsdp")])
def test_max_per_rank_fits_and_one_more_does_not(big, dimension, field, strategy):
    model, gpu = big
    run = make_run(method="lora")
    parallel = make_parallel(gpus=8, strategy=strategy)
    value = max_per_rank(dimension, model, gpu, run, parallel, limit=1 << 20)
    assert 1 <= value < 1 << 20

    def fits(x):
        cluster = plan_ranks(model, gpu, run.model_copy(update={field: x}), parallel=parallel)
        return all(role.breakdown.fits for role in cluster.ranks)
    assert fits(value) and not fits(value + 1)
    assert max_per_rank(dimension, model, gpu, run, make_parallel(gpus=2, strategy="ddp"), limit=64) == 0


def test_with_layout_refuses_what_parallel_config_refuses():
    assert with_layout(make_parallel(gpus=2, strategy="fsdp"), offload="optimizer") is None
    assert with_layout(make_parallel(), gpus=4).resolved_strategy == "ddp"


@pytest.mark.parametrize("dimension, field", [("batch", "micro_batch_size"), ("rank", "lora_rank")])
def test_max_command_with_gpus_answers_per_rank(big, capsys, dimension, field):
    import json

    from vramplan.cli.main import main

    model, gpu = big
    run = make_run(method="lora")
    parallel = make_parallel(gpus=8, strategy="zero3")
    code = main(["max", dimension, "--model", "llama-3.1-70b", "--gpu", "8xa100-40g", "--strategy", "zero3",
                 "--method", "lora", "--host-ram", "2TiB", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["per_rank"] and data["world_size"] == 8 and data["host"]["fits"]
    assert data["value"] == max_per_rank(dimension, model, gpu, run, parallel, limit=data["limit"])
    at = plan_ranks(model, gpu, run.model_copy(update={field: data["value"]}), parallel=parallel)
    assert data["required_bytes"] == at.worst_rank.breakdown.required_bytes and at.worst_rank.breakdown.fits
    assert main(["max", dimension, "--model", "llama-3.1-70b", "--gpu", "a100-40g", "--gpus", "2", "--strategy",
                 "fsdp", "--method", "lora"]) == 1
    assert "nothing fits" in capsys.readouterr().out
