"""Ranked changes that make a run fit; Enter (or a click) applies one."""
from __future__ import annotations

from textual.binding import Binding
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from vramplan.present import gib
from vramplan.tui.widgets.keys import KeysInOrder


def advice_line(item) -> str:
    verdict = "fits" if item.fits else "still too big"
    return f"{item.change} - saves {gib(item.saved_bytes)} GiB, {verdict}  [{item.flags}]"


class AdviceList(KeysInOrder, OptionList):
    """Shown only when the run does not fit; `items` are the Advice objects, in list order."""

    BINDINGS = [Binding("enter", "select", "apply this change")]  # shown in the footer
    items: list = []

    def on_focus(self) -> None:
        if self.highlighted is None and self.items:
            self.highlighted = 0  # a line to apply is always marked while the list has focus

    def show(self, items: list) -> None:
        self.items = list(items)
        self.clear_options()
        self.add_options([Option(advice_line(item), id=str(i)) for i, item in enumerate(self.items)])
        if not self.items:
            self.add_option(Option("no change found that makes it fit", disabled=True))

    def show_unavailable(self, reason: str) -> None:
        self.items = []
        self.clear_options()
        self.add_option(Option(f"advice not available ({reason})", disabled=True))
