"""The optimizer registry is the one place an optimizer is described: every entry is complete, and an
entry registered at run time is accepted by RunConfig and the CLI and planned with its state bytes."""
from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from vramplan.catalog import get_model
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.memory.dtypes import DTYPE_BYTES, resolve_dtypes
from vramplan.memory.plan import paged_optimizer_bytes, trainable_groups
from vramplan.memory.xp import allocation_bytes
from vramplan.optimizers import (
    SIMULATED_BY, STEP_TEMPS, OptimizerEntry, all_optimizers, get_optimizer, optimizer_names, registered,
)
from vramplan.specs.run import field_choices

LIBRARIES = ("torch.optim.", "bitsandbytes.optim.", "transformers.optimization.")


@pytest.mark.parametrize("entry", all_optimizers(), ids=lambda entry: entry.name)
def test_every_registry_entry_has_every_field(entry):
    for field in dataclasses.fields(OptimizerEntry):
        value = getattr(entry, field.name)
        if field.default is dataclasses.MISSING and field.name not in ("state_bytes", "class_kwargs"):
            assert value not in (None, ""), field.name
    assert re.fullmatch(r"[a-z0-9_]+", entry.name)
    assert entry.step_temp in STEP_TEMPS and entry.simulated_by in SIMULATED_BY
    assert entry.library_class.startswith(LIBRARIES)
    assert re.search(r"\d+\.\d+ \S+\.py", entry.source), "source names a library version and file"
    assert entry.state_bytes is None or entry.state_bytes > 0
    assert entry.state_tensors >= 0 and not (entry.factored and entry.state_tensors)
    assert entry.eight_bit == (entry.min_8bit_size > 0) and entry.paged == (entry.min_paged_size > 0)
    assert entry.simulated_by == "library" or entry.uses_bitsandbytes
    assert not entry.advice_offer or entry.advice_state_rank is not None
    assert make_run(optimizer=entry.name).optimizer == entry.name


def test_runconfig_choices_are_the_registry_names_and_a_bad_name_lists_them():
    assert field_choices("optimizer") == optimizer_names()
    with pytest.raises(InputError) as caught:
        make_run(optimizer="lion")
    assert caught.value.field == "optimizer"
    assert all(name in caught.value.message for name in optimizer_names())


def _one_fp32_moment(name: str, **fields) -> OptimizerEntry:
    return OptimizerEntry(
        name, "one fp32 moment (test)", state_tensors=1, state_bytes=4, step_temp="none",
        library_class="torch.optim.SGD", class_kwargs=(("momentum", 0.9),), simulated_by="library",
        hf_optim="sgd", source="torch 2.13 torch/optim/sgd.py", **fields)


@pytest.mark.parametrize("method", ["qlora", "full"])
def test_a_registered_optimizer_is_accepted_and_planned_with_its_state_bytes(method):
    model, gpu = get_model("qwen2.5-0.5b"), get_gpu("h100")
    with registered(_one_fp32_moment("one_moment_test")):
        run = make_run(method=method, optimizer="one_moment_test", lora_dtype="bf16")
        dtypes = resolve_dtypes(run, gpu, model)
        groups = trainable_groups(model, run, run.lora_rank, dtypes.moe_experts)
        expected = sum(allocation_bytes(g.rows * g.cols * 4) * g.count for g in groups)
        assert plan(model, gpu, run).optimizer_state == expected
        # the same state as SGD momentum's where the trainable parameters are fp32 (full, mixed)
        if DTYPE_BYTES[dtypes.trainable] == 4:
            assert expected == plan(model, gpu, run.model_copy(update={"optimizer": "sgd_momentum"})).optimizer_state
    with pytest.raises(InputError):
        make_run(optimizer="one_moment_test")


def test_a_registered_paged_optimizer_moves_state_above_its_threshold_to_managed_memory():
    model, gpu = get_model("qwen2.5-0.5b"), get_gpu("h100")
    threshold = 20_000
    with registered(_one_fp32_moment("paged_moment_test", paged=True, min_paged_size=threshold)):
        run = make_run(method="qlora", optimizer="paged_moment_test", lora_rank=16)
        dtypes = resolve_dtypes(run, gpu, model)
        groups = trainable_groups(model, run, run.lora_rank, dtypes.moe_experts)
        small = [g for g in groups if g.rows * g.cols < threshold]
        large = [g for g in groups if g.rows * g.cols >= threshold]
        assert small and large  # qwen2.5-0.5b's r=16 adapters straddle 20000 elements
        assert plan(model, gpu, run).optimizer_state == sum(allocation_bytes(g.rows * g.cols * 4) * g.count
                                                            for g in small)
        assert paged_optimizer_bytes(model, run, dtypes) == sum(g.rows * g.cols * 4 * g.count for g in large)


def test_the_fit_flags_list_a_registered_optimizer():
    from vramplan.cli.run_flags import add_run_arguments

    with registered(_one_fp32_moment("flag_test")):
        parser = argparse.ArgumentParser()
        add_run_arguments(parser)
        assert "flag_test" in parser.format_help()
        assert parser.parse_args(["--optimizer", "flag_test"]).optimizer == "flag_test"
    assert "flag_test" not in optimizer_names()


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        with registered(_one_fp32_moment("adamw")):
            pass
    assert get_optimizer("adamw").library_class == "torch.optim.AdamW"
