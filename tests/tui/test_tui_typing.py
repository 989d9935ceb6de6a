"""What a user types is what the field holds, and what the field holds is what is planned.

The keys are handed to the app in one go (`type_ahead`), the way a terminal delivers them
when they arrive faster than the app redraws; `pilot.press` waits after every key and so
never showed the keys that went into the wrong field.
"""
from __future__ import annotations

import random

from tui_helpers import drive, settle, type_ahead

from vramplan.tui.app import ExplorerApp
from vramplan.tui.screens import ExplorerScreen

NUMBER_KNOBS = ("micro_batch_size", "grad_accum_steps", "seq_len")  # neighbours in the Tab order


def field(app, key: str) -> str:
    return app.screen.query_one(f"#knob-{key}").value


def test_keys_typed_right_after_tab_go_into_the_field_tab_moved_to():
    async def script(pilot):
        app = pilot.app
        app.screen.query_one("#knob-grad_accum_steps").focus()
        await settle(pilot)
        type_ahead(app, "tab", "2", "0", "4", "8")
        await settle(pilot)
        assert (field(app, "grad_accum_steps"), field(app, "seq_len")) == ("1", "2048")
        assert (app.state.run.grad_accum_steps, app.state.run.seq_len) == (1, 2048)
        type_ahead(app, "shift+tab", "3", "tab", "tab", "tab", "shift+tab", "shift+tab", "4", "0", "9", "6")
        await settle(pilot)
        assert (field(app, "grad_accum_steps"), field(app, "seq_len")) == ("3", "4096")
        assert (app.state.run.grad_accum_steps, app.state.run.seq_len) == (3, 4096)
        assert app.screen.query_one("KnobPanel").errors() == {}

    drive(ExplorerApp("llama-3.1-8b", "rtx4090"), script, size=(140, 44))


def test_leaving_a_field_whose_text_was_not_applied_puts_back_the_value_the_plan_uses():
    async def script(pilot):
        app = pilot.app
        box = app.screen.query_one("#knob-micro_batch_size")
        box.focus()
        await settle(pilot)
        type_ahead(app, "4")  # focus selected the old "1": typing replaces it
        await settle(pilot)
        assert app.state.run.micro_batch_size == 4
        type_ahead(app, "backspace")
        await settle(pilot)
        errors = app.screen.query_one("KnobPanel").errors()
        assert field(app, "micro_batch_size") == "" and app.state.run.micro_batch_size == 4
        assert "planned with 4" in errors["micro_batch_size"], errors  # the difference is spelled out
        type_ahead(app, "tab")
        await settle(pilot)
        assert field(app, "micro_batch_size") == "4"
        assert app.screen.query_one("KnobPanel").errors() == {}
        assert not box.has_class("-invalid")

    drive(ExplorerApp("llama-3.1-8b", "rtx4090"), script, size=(140, 44))


def typed_model(keys: list[str], start: dict[str, str]) -> dict[str, str]:
    """What the three number fields hold after `keys`, by the rules a user sees: Tab and
    Shift+Tab move between neighbours and select the field's text, a digit replaces the
    selection or appends, Backspace deletes the selection or the last digit, Up/Down step a
    whole number (+-1, at least 1; the sequence length doubles and halves), and leaving a field whose
    text is not a positive whole number puts back the last one it held."""
    texts, in_use = dict(start), dict(start)
    at, selected = 0, True
    for key in keys:
        if not 0 <= at < len(NUMBER_KNOBS):
            break  # left the three fields; keys from here on go elsewhere
        name = NUMBER_KNOBS[at]
        if key in ("tab", "shift+tab"):
            if not (texts[name].isdigit() and int(texts[name]) > 0):
                texts[name] = in_use[name]
            at += 1 if key == "tab" else -1
            selected = True
            continue
        if key in ("up", "down") and not texts[name].isdigit():
            continue  # nothing to step
        if key in ("up", "down"):
            value, up = int(texts[name]), key == "up"
            if name == "seq_len":
                texts[name] = str(value * 2 if up else max(1, value // 2))
            else:
                texts[name] = str(value + 1 if up else max(1, value - 1))
        elif key == "backspace":
            texts[name] = "" if selected else texts[name][:-1]
        else:
            texts[name] = key if selected else texts[name] + key
        selected = False
        if texts[name].isdigit() and int(texts[name]) > 0:
            in_use[name] = texts[name]
    return texts


def random_typing(rng: random.Random, length: int) -> list[str]:
    """Digits, Backspace, Up, Down, Tab and Shift+Tab within the three number fields (at most
    four digits or Ups per visit, so the numbers stay ones the planner accepts), then
    Shift+Tab out of them."""
    keys, at, typed = [], 0, 0
    for _ in range(length):
        moves = ["tab"] * (at < 2) + ["shift+tab"] * (at > 0)
        growing = ["up"] + list("0123456789") * 2
        key = rng.choice(moves + ["backspace", "down"] + (growing if typed < 4 else []))
        if key in ("tab", "shift+tab"):
            at, typed = at + (1 if key == "tab" else -1), 0
        elif key in growing:
            typed += 1
        keys.append(key)
    return keys + ["shift+tab"] * (at + 1)


def test_fast_typing_across_fields_ends_with_each_field_as_typed_and_the_plan_as_the_fields(monkeypatch):
    start = {"micro_batch_size": "1", "grad_accum_steps": "1", "seq_len": "512"}
    # Only the fields and the plan matter here; without the solver threads each sequence
    # takes a fraction of a second (and stray digits cannot start an hour-long advice search).
    monkeypatch.setattr(ExplorerScreen, "solve", lambda self, *args: None)

    async def script(pilot):
        app = pilot.app
        for seed in range(8):
            rng = random.Random(seed)
            for name, text in start.items():  # back to the start (as a paste would)
                app.screen.query_one(f"#knob-{name}").value = text
            await settle(pilot)
            app.screen.query_one("#knob-micro_batch_size").focus()
            await settle(pilot)
            keys = random_typing(rng, 40)
            type_ahead(app, *keys)
            await settle(pilot)
            assert app.focused.id == "knob-optimizer"  # the knob before the three
            expected = typed_model(keys, start)
            shown = {name: field(app, name) for name in NUMBER_KNOBS}
            assert shown == expected, (seed, keys)
            assert {name: getattr(app.state.run, name) for name in NUMBER_KNOBS} == \
                {name: int(text) for name, text in shown.items()}, (seed, keys)
            assert app.screen.query_one("KnobPanel").errors() == {}, (seed, keys)

    drive(ExplorerApp("llama-3.1-8b", "rtx4090"), script, size=(140, 44))
