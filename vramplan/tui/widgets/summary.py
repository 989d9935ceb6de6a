"""The verdict line and the largest batch / sequence / rank that fit."""
from __future__ import annotations

from textual.widgets import Static

from vramplan.present import describe_run, gib


def verdict_text(breakdown) -> str:
    """The verdict as `vramplan fit` words it (plain text; markup added by Verdict)."""
    word = "FITS" if breakdown.fits else "DOES NOT FIT"
    return (f"{word}: needs {gib(breakdown.required_bytes)} GiB of {gib(breakdown.capacity_bytes)} GiB, "
            f"headroom {gib(breakdown.headroom_bytes)} GiB")


class Verdict(Static):
    def show(self, breakdown) -> None:
        self.set_class(breakdown.fits, "-fits")
        self.set_class(not breakdown.fits, "-oom")
        lines = [
            verdict_text(breakdown),
            f"{breakdown.model} on {breakdown.gpu}: {describe_run(breakdown)}",
            f"predicted peak (max_memory_allocated) {gib(breakdown.peak_allocated_bytes)} GiB "
            f"during {breakdown.peak_phase.replace('_', ' ')}",
            *(f"note: {note}" for note in breakdown.notes),
        ]
        self.update("\n".join(lines))


class Limits(Static):
    """`largest that fits: micro-batch 12 · sequence length 4096 · LoRA rank 512`.

    Dimmed (class `-stale`) from a knob change until the solver worker answers.
    """

    def on_mount(self) -> None:
        self.update("largest that fits: …")

    def show_limits(self, limits: dict[str, int]) -> None:
        parts = [f"{name} {value if value else 'none'}" for name, value in limits.items()]
        self.update("largest that fits: " + " · ".join(parts))
        self.remove_class("-stale")

    def show_unavailable(self, reason: str) -> None:
        self.update(f"largest that fits: not available ({reason})")
        self.remove_class("-stale")
