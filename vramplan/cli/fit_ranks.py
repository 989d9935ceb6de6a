"""`vramplan fit` on more than one GPU: the cluster line, the per-rank table and the host table."""
from __future__ import annotations

from vramplan.present import gib, table

_HOST_LABELS = {
    "offloaded_optimizer_state": "offloaded optimizer state (+ gradients)",
    "offloaded_parameters": "offloaded parameters",
    "pinned_buffers": "pinned transfer buffers",
    "loading_spike": "loading spike (checkpoint's CPU copy)",
}


def cluster_line(cluster, parallel, gpu_name: str) -> str:
    """'4 x a100-40g (1 node), fsdp: FITS on every rank and the host' and the like."""
    nodes = f"{parallel.nodes} nodes x {parallel.gpus}" if parallel.nodes > 1 else f"{parallel.gpus}"
    layout = [cluster.strategy]
    if parallel.tensor_parallel > 1:
        layout.append(f"tensor parallel {parallel.tensor_parallel}")
    if parallel.offload != "none":
        layout.append(f"offload {parallel.offload} to {parallel.offload_device}")
    ranks_fit = all(role.breakdown.fits for role in cluster.ranks)
    host_fits = cluster.host.fits
    if cluster.fits:
        verdict = "FITS on every rank" + (" and the host" if host_fits else " (host RAM not checked)")
    elif not ranks_fit:
        verdict = "DOES NOT FIT: " + ", ".join(role.name for role in cluster.ranks if not role.breakdown.fits)
        if host_fits is False:
            verdict += " and the host"
    else:
        verdict = "DOES NOT FIT: the host RAM"
    return f"{nodes} x {gpu_name}, {', '.join(layout)} ({cluster.world_size} ranks): {verdict}"


def rank_table(cluster) -> str:
    rows = []
    for role in cluster.ranks:
        b = role.breakdown
        rows.append([role.name + (f" ({role.duty})" if role.duty else ""), b.peak_phase.replace("_", " "),
                     gib(b.peak_allocated_bytes), gib(b.required_bytes), gib(b.capacity_bytes), gib(b.headroom_bytes),
                     b.verdict])
    return table(["ranks", "peak phase", "peak GiB", "needs GiB", "of GiB", "headroom", "verdict"], rows)


def host_table(host, ram_source: str) -> str:
    rows = [[_HOST_LABELS.get(name, name), gib(value)] for name, value in host.components.items() if value]
    rows.append(["needs (larger of loading and training)", gib(host.required_bytes)])
    if host.host_ram_bytes is not None:
        rows.append([f"host RAM ({ram_source})", gib(host.host_ram_bytes)])
        rows.append(["headroom", gib(host.headroom_bytes)])
    lines = [table(["host RAM of one node", "GiB"], rows)]
    if host.host_ram_bytes is None:
        lines.append(f"host RAM: {ram_source or 'unknown'}; no host verdict")
    if host.not_modelled:
        lines.append("not counted: " + ", ".join(_HOST_LABELS.get(name, name) for name in host.not_modelled)
                     + " (the DataLoader's and copy engine's pinned memory)")
    return "\n".join(lines)


def render_cluster(cluster, parallel, gpu_name: str, ram_source: str) -> str:
    return "\n".join([cluster_line(cluster, parallel, gpu_name), "", rank_table(cluster), "", host_table(cluster.host, ram_source)])
