"""The explorer on more than one GPU: the worst rank's verdict, bar and table, the rank roles and the host line,
all as `plan_ranks` says; back on one GPU everything is as before."""
from __future__ import annotations

import json

from textual.widgets import Input, Select
from tui_helpers import assert_shows, assert_table_shows, drive, settle, shown

from vramplan.distributed.solve import max_per_rank
from vramplan.estimate import make_run, plan, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.present import gib
from vramplan.present_ranks import host_line
from vramplan.resolve import resolve_model
from vramplan.solvers import DEFAULT_LIMITS
from vramplan.specs.parallel import ParallelConfig
from vramplan.tui.app import ExplorerApp
from vramplan.tui.state import AUTO, WhatIf
from vramplan.tui.widgets import MemoryBar

LORA = make_run(method="lora")
TIB = 2**40


async def set_knob(pilot, key: str, value) -> None:
    """Type into a text knob (as a user does) or pick in a list; the multi-GPU knobs sit under "more knobs"."""
    app = pilot.app
    app.screen.query_one("#more-knobs").collapsed = False
    await pilot.pause()
    widget = app.screen.query_one(f"#knob-{key}")
    if isinstance(widget, Input):
        widget.focus()
        await pilot.pause()
        await pilot.press("end", *["backspace"] * len(widget.value), *str(value))
    else:
        assert isinstance(widget, Select)
        widget.value = value
    await settle(pilot)


def expected_cluster(gpus: int, strategy: str, host_ram: int | None, offload: str = "none"):
    return plan_ranks(resolve_model("70b"), get_gpu("a100-40g"), LORA, host_ram_bytes=host_ram,
                      parallel=ParallelConfig(gpus=gpus, strategy=strategy, offload=offload))


def test_eight_gpus_fsdp_show_the_worst_rank_and_the_host_then_one_gpu_is_as_before():
    async def script(pilot):
        app = pilot.app
        assert not app.screen.query_one("#ranks").display and app.state.cluster is None
        await set_knob(pilot, "gpu_count", 8)
        await set_knob(pilot, "strategy", "fsdp")
        await set_knob(pilot, "host_ram", "2TiB")
        cluster = expected_cluster(8, "fsdp", 2 * TIB)
        worst = cluster.worst_rank.breakdown
        assert app.state.cluster == cluster and app.state.breakdown == worst
        assert shown(app, "#verdict").startswith(
            f"FITS on every rank: the worst rank ({cluster.worst_rank.name}) needs {gib(worst.required_bytes)} GiB of "
            f"{gib(worst.capacity_bytes)} GiB, headroom {gib(worst.headroom_bytes)} GiB")
        assert app.screen.query_one(MemoryBar).breakdown == worst  # the bar is the worst rank's
        assert_table_shows(app, worst, per_rank=True)
        ranks = shown(app, "#ranks")
        assert app.screen.query_one("#ranks").display and host_line(cluster.host, "as given") in ranks
        assert f"{cluster.worst_rank.name} {gib(worst.required_bytes)}" in ranks
        batch = max_per_rank("batch", resolve_model("70b"), get_gpu("a100-40g"), LORA, app.state.parallel,
                             limit=DEFAULT_LIMITS["batch"])
        assert shown(app, "#limits").startswith(f"largest that fits on every rank: micro-batch {batch} ·")
        assert not app.screen.query_one("#advice").display
        assert shown(app, "#command").endswith("--gpus 8 --strategy fsdp --host-ram 2TiB")
        data = json.loads(app.state.plan_json())
        assert data["world_size"] == 8 and data["host"]["required_bytes"] == cluster.host.required_bytes

        await set_knob(pilot, "strategy", AUTO)
        await set_knob(pilot, "gpu_count", 1)
        single = plan(resolve_model("70b"), get_gpu("a100-40g"), LORA)
        assert app.state.cluster is None and not app.screen.query_one("#ranks").display
        assert_shows(app, single)  # and the multi-GPU rows are gone again
        assert "micro-batch" in shown(app, "#limits") and app.screen.query_one("#advice").display
        assert "--gpus" not in shown(app, "#command")

    drive(ExplorerApp("70b", "a100-40g", LORA), script)


def test_a_host_too_small_is_the_verdict_even_when_every_rank_fits():
    async def script(pilot):
        app = pilot.app
        await set_knob(pilot, "host_ram", "64GiB")  # kept while on one GPU, read once there are more
        await set_knob(pilot, "gpu_count", 8)
        await set_knob(pilot, "strategy", "fsdp")
        cluster = expected_cluster(8, "fsdp", 64 * 2**30)
        assert cluster.worst_rank.breakdown.fits and cluster.host.fits is False
        assert shown(app, "#verdict").startswith("DOES NOT FIT in the host RAM (every rank fits)")
        assert app.screen.query_one("#ranks").has_class("-host-short")
        assert app.screen.query_one("#verdict").has_class("-oom")

    drive(ExplorerApp("70b", "a100-40g", LORA), script)


def test_a_layout_the_planner_refuses_is_shown_under_its_knob_and_changes_nothing():
    async def script(pilot):
        app = pilot.app
        await set_knob(pilot, "gpu_count", 4)
        await set_knob(pilot, "strategy", "fsdp")
        before = app.state.cluster
        await set_knob(pilot, "offload", "optimizer")  # FSDP offloads parameters, not the optimizer alone
        assert "FSDP offloads parameters" in shown(app, "#error-offload") and app.state.cluster == before
        await set_knob(pilot, "gpu_count", "x")
        assert "whole number" in shown(app, "#error-gpu_count") and app.state.parallel.gpus == 4

    drive(ExplorerApp("70b", "a100-40g", LORA), script)


def test_a_one_gpu_solver_answer_that_arrives_late_does_not_overwrite_the_per_rank_limits():
    async def script(pilot):
        app = pilot.app
        state = app.state
        key = (state.model, state.gpu, state.run, state.parallel)
        await set_knob(pilot, "gpu_count", 2)
        app.screen._show_solved(key, {"micro-batch": 99}, [])
        assert "99" not in shown(app, "#limits") and "on every rank" in shown(app, "#limits")

    drive(ExplorerApp("13b", "a100-40g", LORA), script)


def test_a_count_prefix_on_the_gpu_starts_with_that_many():
    state = WhatIf("70b", "4xa100-40g", LORA)
    assert state.gpu_text == "a100-40g" and state.parallel.gpus == 4 and state.cluster.world_size == 4
    assert state.command_line().endswith("--gpu a100-40g --method lora --gpus 4")
