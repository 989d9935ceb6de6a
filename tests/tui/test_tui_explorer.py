"""The explorer shows what the library says for the knobs on screen, and survives bad input."""
from __future__ import annotations

import json

from textual.widgets import Checkbox, Input, Select
from tui_helpers import assert_shows, drive, settle, shown, svg_text

from vramplan import solvers
from vramplan.advice import advise
from vramplan.cli.main import main
from vramplan.emit_hf import hf_snippet
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.present import command_line
from vramplan.resolve import resolve_model
from vramplan.tui.app import ExplorerApp
from vramplan.tui.screens import HelpScreen, TextScreen

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
    "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048,
}


async def turn(pilot, key: str, value, paste: bool = False) -> None:
    """Change knob `key` the way a user does: type (or paste) into a text box, pick in a list, tick a box."""
    widget = pilot.app.screen.query_one(f"#knob-{key}")
    if isinstance(widget, Input) and paste:
        widget.value = str(value)
    elif isinstance(widget, Input):
        widget.focus()
        await pilot.pause()
        await pilot.press("end", *["backspace"] * len(widget.value), *str(value))
    elif isinstance(widget, Checkbox):
        assert widget.value != value
        widget.focus()
        await pilot.press("space")
    else:
        assert isinstance(widget, Select)
        widget.value = value
    await settle(pilot)


def test_every_knob_moves_the_answer_exactly_as_plan_does(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_LLAMA_CONFIG))
    # (knob, value typed or picked, model text, gpu text, the RunConfig fields it means)
    steps = [
        ("model", "llama-3.2-1b", "llama-3.2-1b", "t4", {}),
        ("gpu", "a10g", "llama-3.2-1b", "a10g", {}),
        ("gpu_size", "11GiB", "llama-3.2-1b", "11GiB", {}),
        ("model_path", str(config), str(config), "11GiB", {}),
        ("model", "llama-2-7b", "llama-2-7b", "11GiB", {}),
        ("kbit_prep", "norms", None, None, {"kbit_prep": "norms"}),  # a bool | Literal field: a select of words
        ("method", "lora", None, None, {"method": "lora"}),
        ("weight_format", "fp16", None, None, {"weight_format": "fp16"}),
        ("double_quant", False, None, None, {"double_quant": False}),
        ("compute_dtype", "fp32", None, None, {"compute_dtype": "fp32"}),
        ("lora_rank", 64, None, None, {"lora_rank": 64}),
        ("lora_alpha", 8, None, None, {"lora_alpha": 8.0}),
        ("lora_targets", "q_proj,v_proj", None, None, {"lora_targets": "q_proj,v_proj"}),
        ("optimizer", "adamw_8bit", None, None, {"optimizer": "adamw_8bit"}),
        ("micro_batch_size", 3, None, None, {"micro_batch_size": 3}),
        ("grad_accum_steps", 4, None, None, {"grad_accum_steps": 4}),
        ("seq_len", 2048, None, None, {"seq_len": 2048}),
        ("gradient_checkpointing", False, None, None, {"gradient_checkpointing": False}),
        ("attention", "eager", None, None, {"attention": "eager"}),
        ("loss_impl", "chunked", None, None, {"loss_impl": "chunked"}),  # one of the "more knobs"
        ("method", "inference", None, None, {"method": "inference"}),
    ]

    async def script(pilot):
        app = pilot.app
        model_text, gpu_text, fields = "13b", "t4", {}
        assert_shows(app, plan(resolve_model(model_text), get_gpu(gpu_text), make_run()))
        for key, value, new_model, new_gpu, changed in steps:
            before = (shown(app, "#verdict"), shown(app, "#command"))
            await turn(pilot, key, value)
            model_text, gpu_text = new_model or model_text, new_gpu or gpu_text
            fields.update(changed)
            run = make_run(**fields)
            assert app.state.run == run, key
            assert_shows(app, plan(resolve_model(model_text), get_gpu(gpu_text), run))
            assert shown(app, "#command") == f"$ {command_line(model_text, gpu_text, run)}"
            assert (shown(app, "#verdict"), shown(app, "#command")) != before, f"{key} changed nothing on screen"
            assert app.screen.query_one("KnobPanel").errors() == {}, key
            if key in ("model", "gpu"):  # a pick from the list replaces the typed path / size
                assert app.screen.query_one(f"#knob-{key}_{'path' if key == 'model' else 'size'}").value == ""
            if key in ("model_path", "gpu_size"):  # and the list goes blank while text is in use
                assert app.screen.query_one(f"#knob-{key.split('_')[0]}").value is Select.NULL

    drive(ExplorerApp("13b", "t4"), script, size=(120, 50))


def test_up_and_down_step_a_number_knob():
    async def script(pilot):
        app = pilot.app
        app.screen.query_one("#knob-micro_batch_size").focus()
        await pilot.press("up", "up")
        await settle(pilot)
        assert app.state.run.micro_batch_size == 3
        app.screen.query_one("#knob-seq_len").focus()
        await pilot.press("up")
        await settle(pilot)
        assert app.state.run.seq_len == 1024  # sizes double
        assert_shows(app, plan(resolve_model("13b"), get_gpu("t4"), make_run(micro_batch_size=3, seq_len=1024)))

    drive(ExplorerApp("13b", "t4"), script)


BAD_INPUT = [
    ("micro_batch_size", "4x", "must be a whole number (got '4x')"),
    ("micro_batch_size", "0", "greater than 0"),
    ("seq_len", "abc", "must be a whole number"),
    ("lora_alpha", "high", "must be a number"),
    ("lora_targets", "nonsense_proj", "nonsense_proj not in llama-2-13b"),
    ("gpu_size", "lots", "unknown GPU 'lots'"),
    ("model_path", "./no/such/config.json", "no such file or folder"),
    ("model_path", "/", "no config.json in /"),
]


def test_bad_input_shows_an_inline_error_and_keeps_the_last_good_answer():
    async def script(pilot):
        app = pilot.app
        await turn(pilot, "micro_batch_size", 2)
        good = app.state.breakdown
        screen_before = (shown(app, "#verdict"), shown(app, "#command"))
        for key, text, message in BAD_INPUT:
            last_text = app.screen.query_one(f"#knob-{key}").value
            await turn(pilot, key, text, paste=True)
            errors = app.screen.query_one("KnobPanel").errors()
            assert list(errors) == [key] and message in errors[key], errors
            assert app.screen.query_one(f"#knob-{key}").has_class("-invalid")
            assert app.state.breakdown == good
            assert (shown(app, "#verdict"), shown(app, "#command")) == screen_before
            assert_shows(app, plan(resolve_model("13b"), get_gpu("t4"), make_run(micro_batch_size=2)))
            await turn(pilot, key, last_text, paste=True)  # putting it right clears the error
            assert app.screen.query_one("KnobPanel").errors() == {}
            assert not app.screen.query_one(f"#knob-{key}").has_class("-invalid")
        await turn(pilot, "micro_batch_size", "5", paste=True)
        assert_shows(app, plan(resolve_model("13b"), get_gpu("t4"), make_run(micro_batch_size=5)))

    drive(ExplorerApp("13b", "t4"), script)


def test_largest_fits_and_advice_come_from_the_solvers_and_enter_applies_advice():
    model, gpu, run = resolve_model("13b"), get_gpu("t4"), make_run(seq_len=8192)
    assert not plan(model, gpu, run).fits
    advice = advise(model, gpu, run)
    assert advice

    async def script(pilot):
        app = pilot.app
        limits = shown(app, "#limits")
        assert f"micro-batch {solvers.max_micro_batch(model, gpu, run) or 'none'}" in limits
        assert f"sequence length {solvers.max_seq_len(model, gpu, run) or 'none'}" in limits
        assert f"LoRA rank {solvers.max_lora_rank(model, gpu, run) or 'none'}" in limits
        listed = app.screen.query_one("#advice")
        assert listed.display and listed.option_count == len(advice)
        assert [str(listed.get_option_at_index(i).prompt).split(" - ")[0] for i in range(len(advice))] == \
            [item.change for item in advice]
        listed.focus()
        listed.highlighted = 0
        await pilot.press("enter")
        await settle(pilot)
        assert (app.state.model, app.state.gpu, app.state.run) == (advice[0].model, advice[0].gpu, advice[0].run)
        assert_shows(app, advice[0].breakdown)
        assert str(app.screen.query_one("#knob-seq_len").value) == str(advice[0].run.seq_len)

    drive(ExplorerApp("13b", "t4", run), script)


def test_help_copy_and_save_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def script(pilot):
        app = pilot.app
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await turn(pilot, "seq_len", 1024)
        await pilot.press("f2")
        assert app.clipboard == "vramplan fit --model 13b --gpu t4 --seq 1024"
        await pilot.press("f3")
        assert isinstance(app.screen, TextScreen)
        assert app.clipboard == hf_snippet(app.state.model, app.state.gpu, app.state.run, app.state.breakdown)
        assert app.screen.query_one("#snippet-text").text == app.clipboard
        assert "max_seq_length = 1024" in app.clipboard
        await pilot.press("escape")
        await pilot.press("ctrl+s")
        await pilot.pause()
        return app.state.plan_json(), [n.message for n in app._notifications]

    plan_json, notices = drive(ExplorerApp("13b", "t4"), script)
    svg, saved = tmp_path / "vramplan-llama-2-13b-t4.svg", tmp_path / "vramplan-llama-2-13b-t4.json"
    assert svg.read_text().startswith("<svg")
    assert json.loads(saved.read_text()) == json.loads(plan_json)
    assert json.loads(saved.read_text())["run"]["seq_len"] == 1024
    assert str(svg) in notices and str(saved) in notices


def test_cli_explore_screenshot_writes_an_svg_and_bad_flags_exit_2(tmp_path, capsys):
    target = tmp_path / "shot.svg"
    assert main(["explore", "--model", "7b", "--gpu", "24GiB", "--seq", "1024",
                 "--screenshot", str(target), "--size", "130x40"]) == 0
    screen = "\n".join(svg_text(target.read_text()))
    assert "llama-2-7b on custom 24GiB" in screen and "seq 1024" in screen
    assert main(["tui", "--batch", "0"]) == 2
    assert main(["tui", "--model", "no-such-model"]) == 2
    assert "error: model: unknown model 'no-such-model'" in capsys.readouterr().err
