"""One registry entry per Breakdown component (vramplan.components): every shell reads it, so a
component added there, with its terms in `memory.plan.phase_terms`, shows up everywhere."""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json

import pytest

from vramplan import components
from vramplan.cli.main import main
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.memory import plan as memory_plan
from vramplan.memory.terms import term
from vramplan.present import gib
from vramplan.resolve import resolve_model

planner = importlib.import_module("vramplan.estimate")  # the module; `vramplan.estimate` is also a function

DUMMY = components.Component("dummy_buffer", "dummy buffer (registry test)", "#123456", "oo", "red")
DUMMY_BYTES = 3 * 2**29  # 1.50 GiB in every phase


@pytest.fixture
def dummy_component(monkeypatch):
    """DUMMY in the registry and a term of DUMMY_BYTES in every phase of every plan."""
    original = memory_plan.phase_terms

    def with_dummy(*args, **kwargs):
        phases = original(*args, **kwargs)
        extra = [term("a test buffer", "GPU-resident constant", (("B", DUMMY_BYTES),), "tests/test_component_registry.py")]
        return {phase: {**parts, DUMMY.name: extra} for phase, parts in phases.items()}

    # phase_components (solvers, sweeps) reads the module's name; estimate.plan imported it.
    monkeypatch.setattr(memory_plan, "phase_terms", with_dummy)
    monkeypatch.setattr(planner, "phase_terms", with_dummy)
    with components.registered(DUMMY):
        yield


def test_every_entry_has_every_field_and_names_are_unique():
    entries = components.all_components()
    assert len({entry.name for entry in entries}) == len(entries)
    for entry in entries:
        for field in dataclasses.fields(entry):
            value = getattr(entry, field.name)
            if field.name in ("plot_hatch", "breakdown_field"):
                assert isinstance(value, str)
            elif field.type in ("str", str):
                assert value, (entry.name, field.name)
        assert entry.plot_colour.startswith("#") and len(entry.plot_colour) == 7, entry.name
        assert bool(entry.breakdown_field) != entry.allocated, entry.name
    allocated = [entry.allocated for entry in entries]
    assert allocated == sorted(allocated, reverse=True)  # allocated first, then what the verdict adds


def test_every_allocated_component_is_a_breakdown_key_and_they_sum_to_the_peak():
    for method in ("qlora", "lora", "full", "inference"):
        breakdown = plan(resolve_model("13b"), get_gpu("a100-80g"), make_run(method=method))
        parts = breakdown.components()
        assert list(parts) == [entry.name for entry in components.all_components()]
        assert sum(parts[name] for name in components.allocated_names()) == breakdown.peak_allocated_bytes
        assert breakdown.required_bytes == sum(parts.values())
        dumped = breakdown.model_dump()
        assert all(dumped[name] == parts[name] for name in components.allocated_names())


def test_a_component_outside_the_registry_is_refused():
    from pydantic import ValidationError

    breakdown = plan(resolve_model("7b"), get_gpu("t4"), make_run())
    with pytest.raises(ValidationError):
        type(breakdown).model_validate({**breakdown.model_dump(), "not_registered": 1})


def test_a_registered_component_reaches_the_plan_and_the_fit_table_and_json(dummy_component, capsys):
    breakdown = plan(resolve_model("13b"), get_gpu("t4"), make_run())
    assert breakdown.dummy_buffer == DUMMY_BYTES
    assert sum(breakdown.components()[n] for n in components.allocated_names()) == breakdown.peak_allocated_bytes

    main(["fit", "--model", "13b", "--gpu", "t4"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(DUMMY.label)]
    assert rows and rows[0][-1] == gib(DUMMY_BYTES)

    main(["fit", "--model", "13b", "--gpu", "t4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["dummy_buffer"] == data["components"]["dummy_buffer"] == DUMMY_BYTES
    assert data["peak_allocated_bytes"] == breakdown.peak_allocated_bytes


def test_a_registered_component_reaches_the_plot_legend(dummy_component):
    pytest.importorskip("matplotlib")
    from vramplan.plots import breakdown_figure

    breakdown = plan(resolve_model("13b"), get_gpu("t4"), make_run())
    legend = breakdown_figure(breakdown).axes[0].get_legend()
    texts = [text.get_text() for text in legend.get_texts()]
    assert f"{DUMMY.label}: 1.50 GiB" in texts
    patch = legend.legend_handles[texts.index(f"{DUMMY.label}: 1.50 GiB")]
    assert patch.get_hatch() == DUMMY.plot_hatch


def test_a_registered_component_reaches_the_tui_bar_and_table(dummy_component):
    pytest.importorskip("textual")
    from vramplan.tui.app import ExplorerApp
    from vramplan.tui.widgets import ComponentTable, MemoryBar

    async def shown():
        app = ExplorerApp("13b", "t4")
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one(ComponentTable)
            bar = app.screen.query_one(MemoryBar).render()
            return str(table.get_cell(DUMMY.name, "component")), table.shown_gib(DUMMY.name), bar

    label, size, bar = asyncio.run(shown())
    assert (label, size) == (DUMMY.label, gib(DUMMY_BYTES))
    assert f"{DUMMY.short_label} {gib(DUMMY_BYTES)}" in bar.plain
    assert any(str(span.style) == DUMMY.tui_colour for span in bar.spans)
