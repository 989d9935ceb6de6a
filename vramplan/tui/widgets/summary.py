"""The verdict line, the per-rank and host lines (more than one GPU) and the largest batch / sequence / rank that fit."""
from __future__ import annotations

from textual.widgets import Static

from vramplan.present import describe_run, gib


def verdict_text(breakdown) -> str:
    """The verdict as `vramplan fit` words it (plain text; markup added by Verdict)."""
    word = "FITS" if breakdown.fits else "DOES NOT FIT"
    return (f"{word}: needs {gib(breakdown.required_bytes)} GiB of {gib(breakdown.capacity_bytes)} GiB, "
            f"headroom {gib(breakdown.headroom_bytes)} GiB")


def cluster_verdict_text(breakdown, cluster) -> str:
    """The per-rank verdict: `FITS on every rank: the worst (ranks 0-7) needs ...` and the like."""
    from vramplan.present_ranks import HOST_VERDICT, cluster_verdict

    verdict = cluster_verdict(cluster)
    if verdict == "FITS":
        verdict = "FITS on every rank" + ("" if cluster.host.fits else " (host RAM not checked)")
    elif verdict == HOST_VERDICT:
        verdict = "DOES NOT FIT in the host RAM (every rank fits)"
    return (f"{verdict}: the worst rank ({cluster.worst_rank.name}) needs {gib(breakdown.required_bytes)} GiB of "
            f"{gib(breakdown.capacity_bytes)} GiB, headroom {gib(breakdown.headroom_bytes)} GiB")


class Verdict(Static):
    def show(self, breakdown, cluster=None) -> None:
        """One GPU (`cluster` None) as `vramplan fit` words it; more: the worst rank's numbers and the cluster's verdict."""
        fits = breakdown.fits if cluster is None else cluster.fits
        self.set_class(fits, "-fits")
        self.set_class(not fits, "-oom")
        where = breakdown.gpu if cluster is None else f"{cluster.world_size} x {breakdown.gpu} ({cluster.strategy})"
        lines = [
            verdict_text(breakdown) if cluster is None else cluster_verdict_text(breakdown, cluster),
            f"{breakdown.model} on {where}: {describe_run(breakdown)}",
            f"predicted peak (max_memory_allocated) {gib(breakdown.peak_allocated_bytes)} GiB "
            f"during {breakdown.peak_phase.replace('_', ' ')}",
            *(f"note: {note}" for note in breakdown.notes),
        ]
        self.update("\n".join(lines))


class RankSummary(Static):
    """More than one GPU: which rank the bar shows, every rank role's need, and the host RAM line.
    Hidden on one GPU (the screen is then as it always was)."""

    def show(self, cluster, parallel, ram_source: str) -> None:
        from vramplan.present_ranks import host_line

        if self.display != (cluster is not None):
            self.display = cluster is not None
        if cluster is None:
            return
        nodes = f" on {parallel.nodes} nodes" if parallel.nodes > 1 else ""
        roles = " · ".join(f"{role.name}{f' ({role.duty})' if role.duty else ''} {gib(role.breakdown.required_bytes)}"
                           for role in cluster.ranks)
        self.set_class(cluster.host.fits is False, "-host-short")
        self.update("\n".join([
            f"bar: the worst rank ({cluster.worst_rank.name}) of {cluster.world_size}{nodes}, {cluster.strategy}"
            + (f", offload {parallel.offload}" if parallel.offload != "none" else ""),
            f"GiB per rank: {roles}",
            host_line(cluster.host, ram_source),
        ]))


class Limits(Static):
    """`largest that fits: micro-batch 12 · sequence length 4096 · LoRA rank 512`.

    Dimmed (class `-stale`) from a knob change until the solver worker answers.
    """

    def on_mount(self) -> None:
        self.update("largest that fits: …")

    def show_limits(self, limits: dict[str, int], per_rank: bool = False) -> None:
        parts = [f"{name} {value if value else 'none'}" for name, value in limits.items()]
        self.update(f"largest that fits{' on every rank' if per_rank else ''}: " + " · ".join(parts))
        self.remove_class("-stale")

    def show_unavailable(self, reason: str) -> None:
        self.update(f"largest that fits: not available ({reason})")
        self.remove_class("-stale")
