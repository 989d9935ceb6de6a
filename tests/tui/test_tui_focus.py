"""A user always sees where they are: focus starts on the first knob, Tab stops only on
things one can change or apply, the focused knob stands out, and the footer names the keys."""
from __future__ import annotations

from textual.color import Color
from textual.widgets import Select
from tui_helpers import drive, settle, svg_text

from vramplan.estimate import make_run
from vramplan.tui.app import ExplorerApp
from vramplan.tui.widgets.knobs import MAIN_FIELDS

KNOBS = ["knob-model", "knob-model_path", "knob-gpu", "knob-gpu_size", *(f"knob-{name}" for name in MAIN_FIELDS)]
MORE_KNOBS = "more-knobs (title)"  # the "more knobs" toggle


def name(widget) -> str:
    return widget.id or f"{widget.parent.id} (title)"


async def tab_cycle(pilot, key: str = "tab") -> list[str]:
    """Names of the widgets focus visits, from the current one until it comes back."""
    app, seen = pilot.app, [name(pilot.app.focused)]
    for _ in range(60):
        await pilot.press(key)
        if app.focused is None or name(app.focused) == seen[0]:
            break
        seen.append(name(app.focused))
    return seen


def test_focus_starts_on_the_first_knob_and_tab_stops_only_on_knobs():
    async def script(pilot):
        assert name(pilot.app.focused) == "knob-model"
        forward = await tab_cycle(pilot)
        assert forward == [*KNOBS, MORE_KNOBS]  # no panel, no results pane, no table, no hidden advice
        assert await tab_cycle(pilot, "shift+tab") == [forward[0], *reversed(forward[1:])]

    drive(ExplorerApp("llama-3.1-8b", "rtx4090"), script, size=(140, 44))


def test_tab_reaches_the_advice_when_shown_and_the_extra_knobs_when_opened():
    async def script(pilot):
        app = pilot.app
        assert await tab_cycle(pilot) == [*KNOBS, MORE_KNOBS, "advice"]
        app.screen.query_one("#more-knobs CollapsibleTitle").focus()
        await pilot.press("enter")  # open "more knobs"
        await settle(pilot)
        cycle = await tab_cycle(pilot)
        extra = [widget.id for widget in app.screen.query("#more-knobs .knob-row > *") if widget.focusable]
        assert extra and cycle == [MORE_KNOBS, *extra, "advice", *KNOBS]

    drive(ExplorerApp("llama-3.1-8b", "rtx4090", make_run(seq_len=8192, micro_batch_size=8)), script, size=(140, 44))


def face(widget) -> Color:
    """The background a user sees for the knob's widget (a list shows its current value)."""
    target = widget.query_one("SelectCurrent") if isinstance(widget, Select) else widget
    return target.background_colors[1]


def distance(a: Color, b: Color) -> float:
    return sum((x - y) ** 2 for x, y in zip(a.rgb, b.rgb)) ** 0.5


def test_the_focused_knob_stands_out_from_the_others():
    async def script(pilot):
        app = pilot.app
        for knob_id in KNOBS:
            widget = app.screen.query_one(f"#{knob_id}")
            other = app.screen.query_one("#knob-method" if knob_id != "knob-method" else "#knob-attention")
            other.focus()
            await pilot.pause()
            blurred = face(widget)
            widget.focus()
            await pilot.pause()
            # Textual's own focus tint is 5% of the text colour, about 20 in RGB distance.
            assert distance(face(widget), blurred) > 80, (knob_id, blurred, face(widget))
            knob = widget.query_ancestor(".knob")
            bar_style, bar_color = knob.styles.border_left
            assert bar_style == "thick", knob_id  # a bar beside the focused knob ...
            for label in knob.query(".knob-label"):  # ... and its label in the bar's colour, bold
                assert label.rich_style.bold and label.rich_style.color.triplet == bar_color.rich_color.triplet
            barred = [k for k in app.screen.query(".knob") if k.styles.border_left[0] == "thick"]
            assert barred == [knob], knob_id

    drive(ExplorerApp("llama-3.1-8b", "rtx4090"), script, size=(140, 44))


def footer(app) -> str:
    return svg_text(app.export_screenshot())[-1]


def test_the_footer_names_the_keys_for_where_focus_is():
    async def script(pilot):
        app = pilot.app
        everywhere = ["tab next", "shift+tab back", "^q quit", "f1 help", "f2 copy command", "f3 HF snippet",
                      "^s save", "^p palette"]
        line = footer(app)
        assert all(key in line for key in everywhere), line
        app.screen.query_one("#knob-seq_len").focus()
        await settle(pilot)
        line = footer(app)
        assert "↑ larger" in line and "↓ smaller" in line and all(key in line for key in everywhere), line
        app.screen.query_one("#advice").focus()
        await settle(pilot)
        assert "apply this change" in footer(app)
        assert app.screen.query_one("#advice").highlighted == 0  # the line Enter applies is marked

    drive(ExplorerApp("llama-3.1-8b", "rtx4090", make_run(seq_len=8192, micro_batch_size=8)), script, size=(140, 44))
