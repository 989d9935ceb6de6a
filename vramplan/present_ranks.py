"""How the shells word a per-rank plan (ClusterPlan): its verdict and the host RAM line.

`compare` on more than one GPU and the TUI's per-rank view both use these; `fit`'s tables
are in cli/fit_ranks.py.
"""
from __future__ import annotations

from vramplan.present import gib

HOST_VERDICT = "DOES NOT FIT (host)"


def cluster_verdict(cluster) -> str:
    """The worst rank's verdict (FITS, DOES NOT FIT, CANNOT RUN HERE); when every rank fits but
    one node's host RAM does not, `DOES NOT FIT (host)`."""
    worst = cluster.worst_rank.breakdown
    if worst.fits and cluster.host.fits is False:
        return HOST_VERDICT
    return worst.verdict


def host_line(host, ram_source: str) -> str:
    """'host RAM of one node: needs 128.48 GiB of 1024.00 GiB (as given), headroom 895.52 GiB' or
    '... (not checked)' when the node's RAM is not known."""
    needs = f"host RAM of one node: needs {gib(host.required_bytes)} GiB"
    if host.host_ram_bytes is None:
        return f"{needs} (host RAM {ram_source or 'not known'}: no host verdict)"
    word = "fits" if host.fits else "DOES NOT FIT"
    return (f"{needs} of {gib(host.host_ram_bytes)} GiB ({ram_source}), headroom {gib(host.headroom_bytes)} GiB: "
            f"{word}")
