"""The serving view (F4): switch engine, turn a knob, and the numbers on screen are the engine's plan."""
from __future__ import annotations

import argparse

from textual.widgets import Input, Select
from tui_helpers import drive, settle, shown

from vramplan.cli.serve import engine_module
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model
from vramplan.serve import llamacpp, vllm
from vramplan.tui.app import ExplorerApp
from vramplan.tui.screens import ExplorerScreen
from vramplan.tui.serve_screen import ServeScreen
from vramplan.tui.serve_state import TRAIN, verdict_line


async def type_into(pilot, selector: str, text: str) -> None:
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    await pilot.pause()
    await pilot.press("end", *["backspace"] * len(widget.value), *text)
    await settle(pilot)


def vllm_plan(model="mistral-7b", gpu="l4", **settings):
    return vllm.plan_vllm(resolve_model(model), get_gpu(gpu), vllm.VllmSettings(**settings))


def test_f4_shows_vllm_and_a_typed_max_model_len_moves_the_numbers_as_plan_vllm_does():
    async def script(pilot):
        await pilot.press("f4")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ServeScreen)
        first = shown(pilot.app, "#verdict")
        await type_into(pilot, "#knob-vllm-max_model_len", "8192")
        return first, shown(pilot.app, "#verdict"), shown(pilot.app, "#serve-plan"), shown(pilot.app, "#command")

    first, verdict, plan_text, command = drive(ExplorerApp("mistral-7b", "l4"), script)
    default, short = vllm_plan(), vllm_plan(max_model_len=8192)
    assert first.startswith(verdict_line("vllm", default))
    assert verdict.startswith(verdict_line("vllm", short)) and verdict != first
    assert f"{short.max_concurrency:.2f}x concurrency at max-model-len 8192" in verdict
    assert plan_text == short.render_text()
    assert command == "$ vramplan serve --engine vllm --model mistral-7b --gpu l4 --max-model-len 8192"


def test_vllm_kv_cache_dtype_and_utilization_knobs_match_the_engine():
    async def script(pilot):
        await pilot.press("f4")
        await settle(pilot)
        pilot.app.screen.query_one("#knob-vllm-kv_cache_dtype", Select).value = "fp8"
        await settle(pilot)
        await type_into(pilot, "#knob-vllm-gpu_memory_utilization", "0.8")
        await type_into(pilot, "#knob-vllm-max_num_seqs", "64")
        return shown(pilot.app, "#verdict"), pilot.app.serve_state.plan

    verdict, plan = drive(ExplorerApp("llama-3.1-8b", "l4"), script)
    expected = vllm_plan("llama-3.1-8b", kv_cache_dtype="fp8", gpu_memory_utilization=0.8, max_num_seqs=64)
    assert plan == expected and verdict.startswith(verdict_line("vllm", expected))
    assert not expected.fits and verdict.startswith("DOES NOT START")  # 131072-token max-model-len on an L4


def test_switching_to_llamacpp_and_setting_ngl_and_host_ram_matches_serves_plan():
    async def script(pilot):
        await pilot.press("f4", "f4")  # the second F4: the next engine
        await settle(pilot)
        assert pilot.app.serve_state.engine == "llama.cpp"
        assert pilot.app.screen.query_one("#knob-llamacpp-ctx_size").parent.parent.display  # the knob: label, widget, error line
        assert not pilot.app.screen.query_one("#knob-vllm-max_model_len").parent.parent.display
        pilot.app.screen.query_one("#knob-llamacpp-format", Select).value = "gguf-q4_k_m"
        await settle(pilot)
        await type_into(pilot, "#knob-llamacpp-ctx_size", "8192")
        before = shown(pilot.app, "#verdict")
        await type_into(pilot, "#knob-llamacpp-n_gpu_layers", "40")
        await type_into(pilot, "#knob-llamacpp-host_ram", "64GiB")
        return before, shown(pilot.app, "#verdict"), shown(pilot.app, "#serve-plan")

    before, verdict, plan_text = drive(ExplorerApp("llama-3.1-70b", "4090"), script)
    settings = llamacpp.LlamaCppSettings(n_gpu_layers=40, ctx_size=8192)
    expected = llamacpp.plan(resolve_model("llama-3.1-70b"), get_gpu("4090"), settings, 64 * 2**30, "gguf-q4_k_m")
    assert verdict.startswith(verdict_line("llama.cpp", expected)) and verdict != before
    assert "-ngl 40 of 81" in verdict and plan_text == expected.render_text()


def test_a_bad_knob_value_shows_the_engines_error_and_keeps_the_last_plan():
    async def script(pilot):
        await pilot.press("f4")
        await settle(pilot)
        good = shown(pilot.app, "#verdict")
        await type_into(pilot, "#knob-vllm-gpu_memory_utilization", "2")
        return good, shown(pilot.app, "#verdict"), shown(pilot.app, "#error-vllm-gpu_memory_utilization")

    good, after, error = drive(ExplorerApp("mistral-7b", "l4"), script)
    assert after == good
    assert error.startswith("--gpu-memory-utilization: must be in (0, 1] (got 2.0)")


def test_hf_engine_is_the_inference_plan_and_train_goes_back():
    async def script(pilot):
        await pilot.press("f4", "f4", "f4")
        await settle(pilot)
        await type_into(pilot, "#knob-hf-seq", "2048")
        verdict = shown(pilot.app, "#verdict")
        pilot.app.screen.query_one("#knob-engine", Select).value = TRAIN
        await settle(pilot)
        return verdict, type(pilot.app.screen)

    verdict, screen = drive(ExplorerApp("mistral-7b", "l4"), script)
    args = argparse.Namespace(seq=2048, batch=None, max_new_tokens=None, format=None)
    expected = engine_module("hf").plan_from_args(resolve_model("mistral-7b"), get_gpu("l4"), args)
    assert verdict.startswith(verdict_line("hf", expected)) and screen is ExplorerScreen


def test_the_serving_view_follows_the_explorers_gpu():
    async def script(pilot):
        await pilot.press("f4")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        pilot.app.screen.query_one("#knob-gpu", Select).value = "a100-80g"
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)
        return shown(pilot.app, "#verdict")

    verdict = drive(ExplorerApp("mistral-7b", "l4"), script)
    assert verdict.startswith(verdict_line("vllm", vllm_plan(gpu="a100-80g")))


def test_the_engine_list_and_the_model_list_are_picked_with_the_keyboard():
    """Enter opens a list, Down moves, Enter picks: the keys reach the open list, not the closed Select."""
    async def script(pilot):
        await pilot.press("f4")
        await settle(pilot)
        pilot.app.screen.query_one("#knob-engine", Select).focus()
        await pilot.press("enter", "down", "enter")
        await settle(pilot)
        engine = pilot.app.screen.state.engine
        await pilot.press("escape")
        await settle(pilot)
        model_list = pilot.app.screen.query_one("#knob-model", Select)
        model_list.focus()
        before = model_list.value
        await pilot.press("enter", "down", "enter")
        await settle(pilot)
        return engine, before, model_list.value

    engine, before, after = drive(ExplorerApp("mistral-7b", "l4"), script)
    assert engine == "llama.cpp"
    assert after != before
