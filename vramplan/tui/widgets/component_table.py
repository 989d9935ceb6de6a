"""Where every byte goes: one row per Breakdown component, updated in place."""
from __future__ import annotations

from textual.widgets import DataTable

from vramplan.components import component
from vramplan.present import gib

TOTAL = "total needed"
CAPACITY = "GPU capacity"


class ComponentTable(DataTable, can_focus=False):
    """Rows are made once; each change rewrites cells with `update_cell` (no flicker).

    Output only: no focus and no cursor, so nothing here looks like the focused knob.
    """

    def on_mount(self) -> None:
        self.show_cursor = False
        self.zebra_stripes = True
        self.add_column("component at the peak", key="component")
        self.add_column("GiB", key="gib", width=8)
        self.add_column("share", key="share", width=6)

    def show(self, breakdown, per_rank: bool = False) -> None:
        """The components of `breakdown`; the multi-GPU ones (gathered units, buckets, NCCL) only when `per_rank`."""
        values = {key: value for key, value in breakdown.components().items()
                  if per_rank or not getattr(component(key), "multi_gpu", False)}
        values |= {TOTAL: breakdown.required_bytes, CAPACITY: breakdown.capacity_bytes}
        if [key.value for key in self.rows] != list(values):  # first draw, or one GPU <-> more: the rows change
            self.clear()
            for key in values:
                entry = component(key)
                self.add_row(entry.label if entry else key, "", "", key=key)
        for key, value in values.items():
            self.update_cell(key, "gib", gib(value).rjust(7) if value else "      –")
            share = f"{100 * value / breakdown.required_bytes:5.1f}%" if value and key != CAPACITY else ""
            self.update_cell(key, "share", share)

    def shown_gib(self, key: str) -> str:
        """The GiB text in row `key` (what a user reads)."""
        return str(self.get_cell(key, "gib")).strip()
