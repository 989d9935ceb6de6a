"""The per-rank view (issue 15, shaped for issue 17): one GPU is one rank holding exactly `plan()`,
`fit --json` only gains keys, and a multi-role plan's verdict and worst rank follow its roles and host."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

import vramplan
from vramplan.cli.main import main
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model
from vramplan.specs.cluster import ClusterPlan, HostMemory, RankPlan, ranks_label

METHODS = ["qlora", "lora", "full", "inference"]
ADDED_KEYS = {"strategy", "nodes", "world_size", "ranks", "host"}


@pytest.fixture(scope="module")
def specs_13b_t4():
    return resolve_model("13b"), get_gpu("t4")


@pytest.mark.parametrize("method", METHODS)
def test_single_gpu_plan_is_one_rank_holding_exactly_plan(specs_13b_t4, method):
    model, gpu = specs_13b_t4
    run = make_run(method=method)
    expected = plan(model, gpu, run, margin_bytes=2**30)
    cluster = plan_ranks(model, gpu, run, margin_bytes=2**30)
    assert (cluster.strategy, cluster.world_size, cluster.nodes, len(cluster.ranks)) == ("single", 1, 1, 1)
    only = cluster.ranks[0]
    assert only.breakdown == expected and only.ranks == (0,) and only.name == "rank 0" and only.count == 1
    assert cluster.worst_rank is only
    assert cluster.fits == expected.fits
    assert cluster.host.required_bytes == 0 and cluster.host.fits is None
    assert set(cluster.host.not_modelled) == {"pinned_buffers", "loading_spike"}


@pytest.mark.parametrize("method", METHODS)
def test_fit_json_keeps_every_breakdown_key_and_only_adds_the_rank_view(capsys, specs_13b_t4, method):
    model, gpu = specs_13b_t4
    expected = plan(model, gpu, make_run(method=method))
    code = main(["fit", "--model", "13b", "--gpu", "t4", "--method", method, "--json"])
    data = json.loads(capsys.readouterr().out)
    old = expected.model_dump(mode="json") | {"components": expected.components()}
    assert {key: data[key] for key in old} == old
    assert list(data)[:len(old)] == list(old)  # the old keys first, in their old order
    assert set(data) - set(old) == ADDED_KEYS
    assert code == (0 if expected.fits else 1)
    (rank,) = data["ranks"]
    assert (rank["name"], rank["ranks"], rank["count"]) == ("rank 0", [0], 1)
    assert (rank["required_bytes"], rank["headroom_bytes"], rank["fits"], rank["components"]) == \
        (expected.required_bytes, expected.headroom_bytes, expected.fits, expected.components())
    assert data["host"]["required_bytes"] == 0 and data["host"]["host_ram_bytes"] is None


def test_json_additions_never_shadow_a_breakdown_key(specs_13b_t4):
    breakdown = plan(*specs_13b_t4, make_run())
    additions = ClusterPlan.single(breakdown).json_additions()
    assert set(additions) == ADDED_KEYS
    assert not set(additions) & (set(breakdown.model_dump()) | {"components", "simulation"})


def _with_headroom(breakdown, headroom_bytes):
    return breakdown.model_copy(update={"headroom_bytes": headroom_bytes, "fits": headroom_bytes >= 0})


@pytest.fixture(scope="module")
def two_roles(specs_13b_t4):
    """A 4-GPU shape by hand: rank 0 (which also loads the CPU copy) has less room than ranks 1-3."""
    base = plan(*specs_13b_t4, make_run())
    loader = RankPlan(ranks=(0,), breakdown=_with_headroom(base, 2**30), duty="loads the full CPU copy")
    others = RankPlan(ranks=(1, 2, 3), breakdown=_with_headroom(base, 3 * 2**30))
    return loader, others


def test_worst_rank_is_the_one_with_least_headroom(two_roles):
    loader, others = two_roles
    cluster = ClusterPlan(strategy="fsdp", world_size=4, ranks=(others, loader))
    assert cluster.worst_rank is loader and cluster.fits
    assert [role.name for role in cluster.ranks] == ["ranks 1-3", "rank 0"]
    assert [role.count for role in cluster.ranks] == [3, 1]


def test_a_rank_that_does_not_fit_is_the_worst_and_sinks_the_plan(two_roles):
    loader, others = two_roles
    short = others.model_copy(update={"breakdown": _with_headroom(others.breakdown, -1)})
    cluster = ClusterPlan(strategy="fsdp", world_size=4, ranks=(loader, short))
    assert cluster.worst_rank is short and not cluster.fits


def test_a_failed_host_sinks_the_plan_and_an_unknown_host_does_not(two_roles):
    host_need = {"offloaded_optimizer_state": 40 * 2**30, "pinned_buffers": 2**30}
    roles = dict(strategy="zero3", world_size=4, ranks=two_roles)
    small = ClusterPlan(**roles, host=HostMemory(components=host_need, host_ram_bytes=32 * 2**30))
    large = ClusterPlan(**roles, host=HostMemory(components=host_need, host_ram_bytes=64 * 2**30))
    unknown = ClusterPlan(**roles, host=HostMemory(components=host_need))
    assert (small.host.fits, small.fits, small.host.headroom_bytes) == (False, False, -9 * 2**30)
    assert (large.host.fits, large.fits, large.host.headroom_bytes) == (True, True, 23 * 2**30)
    assert (unknown.host.fits, unknown.fits, unknown.host.headroom_bytes) == (None, True, None)
    assert small.host.required_bytes == 41 * 2**30


def test_roles_must_cover_every_rank_once(two_roles):
    loader, others = two_roles
    with pytest.raises(ValidationError, match="exactly once"):
        ClusterPlan(world_size=4, ranks=(others,))  # rank 0 missing
    with pytest.raises(ValidationError, match="exactly once"):
        ClusterPlan(world_size=4, ranks=(loader, loader, others))
    with pytest.raises(ValidationError, match="multiple of nodes"):
        ClusterPlan(world_size=4, nodes=3, ranks=two_roles)
    with pytest.raises(ValidationError, match="sorted"):
        RankPlan(ranks=(2, 1), breakdown=loader.breakdown)


def test_host_components_are_named_from_one_list():
    with pytest.raises(ValidationError, match="unknown host components"):
        HostMemory(components={"swap": 1})
    with pytest.raises(ValidationError, match="zero or more"):
        HostMemory(components={"loading_spike": -1})
    with pytest.raises(ValidationError, match="both counted and not modelled"):
        HostMemory(components={"loading_spike": 1}, not_modelled=("loading_spike",))


def test_rank_labels_name_runs_and_scattered_stages():
    assert [ranks_label(r) for r in [(0,), (1, 2, 3), (0, 4, 8)]] == ["rank 0", "ranks 1-3", "ranks 0, 4, 8"]


def test_plan_ranks_refuses_negative_host_ram_and_is_exported(specs_13b_t4):
    with pytest.raises(InputError, match="host_ram"):
        plan_ranks(*specs_13b_t4, make_run(), host_ram_bytes=-1)
    assert vramplan.plan_ranks is plan_ranks and vramplan.ClusterPlan is ClusterPlan
    cluster = plan_ranks(*specs_13b_t4, make_run(), host_ram_bytes=64 * 2**30)
    assert cluster.host.fits is True and cluster.host.headroom_bytes == 64 * 2**30
