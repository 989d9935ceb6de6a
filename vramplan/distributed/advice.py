"""Multi-GPU advice: shard a run that does not fit one GPU; and for a per-rank plan, the fewest GPUs,
the cheapest strategy and the run changes that make the worst rank fit, or its room to spare.

Every suggestion is a per-rank plan (`plan_ranks`) of the changed layout or run, found by the
searches in `solve.py`; nothing is a table of savings. The run changes are `vramplan.advice`'s
(a flag: micro-batch with more accumulation, shorter sequences, checkpointing, a lighter optimizer;
chunked cross-entropy; a lower LoRA rank; QLoRA), with batch, sequence and rank solved per rank
(`solve.max_per_rank`) instead of on one GPU. "Fits" for a run change means every rank fits its GPU;
the host's verdict is the layout's and is said beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vramplan.advice import (COSTS, checkpointing_changes, chunked_loss_changes, divisors_below, largest_fitting,
                             method_changes, nice_seq, optimizer_changes, seq_floor)
from vramplan.distributed.comm_volume import CommVolume, comm_volume
from vramplan.solvers import power_of_two_floor
from vramplan.distributed.solve import (GPUS_PER_NODE, Layout, fewest_gpus, fewest_tensor_parallel, max_per_rank,
                                        ranked_strategies)
from vramplan.errors import InputError
from vramplan.present import gib
from vramplan.solvers import DEFAULT_LIMITS, describe_rounded
from vramplan.specs import GPUSpec, ModelSpec, RunConfig
from vramplan.specs.cluster import ClusterPlan, HostMemory
from vramplan.specs.parallel import ParallelConfig

SHARD_MAX_WORLD = 64  # whole nodes of 8 searched when one node is not enough
_LAYOUT_FIELDS = ("gpus", "nodes", "strategy", "tensor_parallel", "offload", "offload_device")


def layout_flags(new: ParallelConfig, old: ParallelConfig | None = None) -> str:
    """The `fit` flags that turn `old` (default: one GPU) into `new`: --gpus, --nodes, --strategy,
    --tensor-parallel, --offload (and its device)."""
    old = old or ParallelConfig()
    flags = []
    for name in _LAYOUT_FIELDS:
        value, before = getattr(new, name), getattr(old, name)
        if value != before and value is not None:  # strategy None: fit's own choice (ddp on more than one GPU)
            flags.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(flags)


def ranks_fit(cluster: ClusterPlan) -> bool:
    return all(role.breakdown.fits for role in cluster.ranks)


def _plan(model, gpu, run, parallel, margin_bytes=0, host_ram_bytes=None):
    from vramplan.estimate import plan_ranks

    return plan_ranks(model, gpu, run, parallel=parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)


# -- one GPU that is not enough: shard it --

@dataclass(frozen=True)
class ShardStep:
    """The multi-GPU step after a single GPU's advice: the layout that fits (None: none searched does)."""

    change: str
    flags: str
    layout: Layout | None


def shard_step(model: ModelSpec, gpu: GPUSpec, run: RunConfig, *, margin_bytes: int = 0) -> ShardStep | None:
    """FSDP on the fewest GPUs of one node (2 to 8) with the run unchanged; past 8, ZeRO-3 with the
    optimizer offloaded to the CPU on one node; past that, FSDP over whole nodes of 8 (up to 64 GPUs).
    Inference shards no training state: the smallest tensor-parallel degree that fits, or None; None
    too for a base no wrapper shards."""
    if not run.trains:
        found = fewest_tensor_parallel(model, gpu, run, ParallelConfig(), margin_bytes=margin_bytes)
        if found is None:
            return None
        return ShardStep(f"split the model with tensor parallelism over {found.world_size} GPUs",
                         layout_flags(found.parallel), found)
    try:
        fsdp = ParallelConfig(gpus=2, strategy="fsdp")
        found = fewest_gpus(model, gpu, run, fsdp, min_world=2, max_world=GPUS_PER_NODE, margin_bytes=margin_bytes)
        if found is not None:
            return ShardStep(f"shard with FSDP over {found.world_size} GPUs (run unchanged)",
                             layout_flags(found.parallel), found)
        zero3 = ParallelConfig(gpus=2, strategy="zero3", offload="optimizer")
        found = fewest_gpus(model, gpu, run, zero3, min_world=2, max_world=GPUS_PER_NODE, margin_bytes=margin_bytes)
        if found is not None:
            return ShardStep(f"FSDP needs more than {GPUS_PER_NODE} GPUs; ZeRO-3 with the optimizer offloaded to the "
                             f"CPU fits on {found.world_size}", layout_flags(found.parallel), found)
        found = fewest_gpus(model, gpu, run, fsdp, min_world=2 * GPUS_PER_NODE, max_world=SHARD_MAX_WORLD,
                            margin_bytes=margin_bytes)
    except InputError:
        return None
    if found is not None:
        return ShardStep(f"FSDP (and ZeRO-3 with offload) need more than one node of {GPUS_PER_NODE}; FSDP fits on "
                         f"{found.parallel.nodes} nodes x {found.parallel.gpus} GPUs", layout_flags(found.parallel),
                         found)
    return ShardStep(f"neither FSDP nor ZeRO-3 with offload fits on up to {SHARD_MAX_WORLD} GPUs", "", None)


def _host_text(cluster: ClusterPlan) -> str:
    host = cluster.host
    if host.host_ram_bytes is None:
        return f"host RAM needed per node {gib(host.required_bytes)} GiB"
    verdict = "fits" if host.fits else "DOES NOT FIT"
    return f"host RAM per node {gib(host.required_bytes)} of {gib(host.host_ram_bytes)} GiB: {verdict}"


def render_shard_step(step: ShardStep | None) -> str:
    """'on more GPUs:' and the step's line, with its per-rank headroom, host need and flags; '' for None."""
    if step is None:
        return ""
    if step.layout is None:
        return f"on more GPUs:\n  - {step.change}"
    worst = step.layout.cluster.worst_rank.breakdown
    return (f"on more GPUs:\n  - {step.change}: per-rank headroom {gib(worst.headroom_bytes)} GiB, "
            f"{_host_text(step.layout.cluster)}  [{step.flags}]")


# -- a per-rank plan: what makes the worst rank fit, or what room it has --

@dataclass(frozen=True)
class RankChange:
    """One run change re-planned on the same GPUs: its per-rank plan and the worst rank's saving."""

    change: str
    flags: str
    run: RunConfig
    cluster: ClusterPlan
    saved_bytes: int  # old worst-rank peak - new worst-rank peak
    kinds: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return ranks_fit(self.cluster)

    @property
    def cost(self) -> int:
        return sum(COSTS[kind] for kind in self.kinds)


@dataclass(frozen=True)
class RankAdvice:
    """What `fit` on more than one GPU prints under its tables (module docstring)."""

    fits: bool
    fewest: Layout | None = None  # the fewest GPUs for this strategy (GPU memory only), host verdict re-planned
    fewest_searched: bool = False
    cheapest: Layout | None = None  # the least-communication strategy that fits on these GPUs
    current_volume: CommVolume | None = None
    changes: list[RankChange] = field(default_factory=list)
    spare: list[RankChange] = field(default_factory=list)
    cheapest_gpus_only: Layout | None = None  # when none fits with the host: the cheapest that fits the GPUs
    tensor_parallel: Layout | None = None  # inference: the smallest tensor-parallel degree that fits
    host_short: HostMemory | None = None  # the node's host RAM, when it is all that does not fit
    inference: bool = False


def _rank_change(kinds, change, flags, run, model, gpu, parallel, base_peak, margin_bytes) -> RankChange | None:
    try:
        cluster = _plan(model, gpu, run, parallel, margin_bytes)
    except InputError:
        return None
    peak = cluster.worst_rank.breakdown.peak_allocated_bytes
    return RankChange(change, flags, run, cluster, base_peak - peak, kinds)


def _batch_change(model, gpu, run, parallel, margin_bytes):
    """The largest micro-batch below the run's that fits per rank, with the same effective batch."""
    batch, effective = run.micro_batch_size, run.micro_batch_size * run.grad_accum_steps
    if batch <= 1:
        return []

    def changed(new: int) -> RunConfig:
        return run.model_copy(update={"micro_batch_size": new, "grad_accum_steps": effective // new})

    def fits(new: int) -> bool:
        return ranks_fit(_plan(model, gpu, changed(new), parallel, margin_bytes))

    return [(("batch",), f"micro-batch {new} x gradient accumulation {effective // new} per rank "
                         f"(same effective batch {effective} per rank)",
             f"--batch {new} --accum {effective // new}", changed(new))
            for new in largest_fitting(divisors_below(effective, batch), fits)]


def _seq_change(model, gpu, run, parallel, margin_bytes):
    if run.seq_len <= 1:
        return []
    fitting = nice_seq(max_per_rank("seq", model, gpu, run, parallel, limit=run.seq_len - 1, margin_bytes=margin_bytes))
    new = fitting if fitting >= seq_floor(run.seq_len) else run.seq_len // 2
    return [(("seq",), f"shorter training sequences: {new} tokens (from {run.seq_len})", f"--seq {new}",
             run.model_copy(update={"seq_len": new}))]


def _rank_lowered(model, gpu, run, parallel, margin_bytes):
    if not run.uses_lora or run.lora_rank <= 1:
        return []
    exact = max_per_rank("rank", model, gpu, run, parallel, limit=run.lora_rank - 1, margin_bytes=margin_bytes)
    new = power_of_two_floor(exact) or max(1, run.lora_rank // 2)
    return [(("rank",), f"LoRA rank {new} (from {run.lora_rank})", f"--rank {new}",
             run.model_copy(update={"lora_rank": new}))]


def _from_advice(maker):
    """One of `vramplan.advice`'s change builders that plans nothing, as (kinds, text, flags, run) tuples."""
    def changes(model, gpu, run, parallel, margin_bytes):
        return [(item.kinds, item.change, item.flags, item.run) for item in maker(model, gpu, run)]
    return changes


RANK_CHANGES = (_batch_change, _seq_change, _from_advice(checkpointing_changes), _from_advice(optimizer_changes),
                _from_advice(chunked_loss_changes), _rank_lowered, _from_advice(method_changes))
_DISCRETE_KINDS = ("checkpointing", "optimizer", "chunked_loss")


def rank_run_changes(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, cluster: ClusterPlan, *,
                     margin_bytes: int = 0, limit: int = 6) -> list[RankChange]:
    """Run changes on the same GPUs and strategy: per kind the first that makes every rank fit, else the
    biggest saver; when none fits alone, the flag changes together with micro-batch 1 and the sequence solved.
    Fitting ones first (cheapest first), then the others by saving."""
    if not run.trains:
        return []
    base_peak = cluster.worst_rank.breakdown.peak_allocated_bytes
    by_kind: dict[tuple, list[RankChange]] = {}
    for make in RANK_CHANGES:
        for kinds, text, flags, changed in make(model, gpu, run, parallel, margin_bytes):
            item = _rank_change(kinds, text, flags, changed, model, gpu, parallel, base_peak, margin_bytes)
            if item is not None:
                by_kind.setdefault(kinds, []).append(item)
    chosen = []
    for items in by_kind.values():
        fitting = [item for item in items if item.fits]
        best = fitting[:1] or [max(items, key=lambda item: item.saved_bytes)]
        chosen.extend(item for item in best if item.fits or item.saved_bytes > 0)
    if not any(item.fits for item in chosen):
        combined = _combination(model, gpu, run, parallel, chosen, base_peak, margin_bytes)
        if combined is not None:
            chosen.append(combined)
    fitting = sorted((item for item in chosen if item.fits), key=lambda item: item.cost)
    others = sorted((item for item in chosen if not item.fits), key=lambda item: -item.saved_bytes)
    return (fitting + others)[:limit]


def _combination(model, gpu, run, parallel, chosen, base_peak, margin_bytes) -> RankChange | None:
    """The helping flag changes at once, micro-batch 1 with the accumulation that keeps the effective
    batch, then the longest sequence that fits per rank (not below a quarter of the run's)."""
    helping = [item for item in chosen if set(item.kinds) <= set(_DISCRETE_KINDS) and item.saved_bytes > 0]
    changed, texts, flags, kinds = run, [], [], []
    for item in helping:
        update = {name: getattr(item.run, name) for name in ("gradient_checkpointing", "optimizer", "loss_impl")
                  if getattr(item.run, name) != getattr(run, name)}
        changed = changed.model_copy(update=update)
        texts.append(item.change.split(" (")[0])
        flags.append(item.flags)
        kinds.extend(item.kinds)
    if changed.micro_batch_size > 1:
        effective = changed.micro_batch_size * changed.grad_accum_steps
        changed = changed.model_copy(update={"micro_batch_size": 1, "grad_accum_steps": effective})
        texts.append(f"micro-batch 1 x accumulation {effective}")
        flags.append(f"--batch 1 --accum {effective}")
        kinds.append("batch")
    if not ranks_fit(_plan(model, gpu, changed, parallel, margin_bytes)):
        seq = nice_seq(max_per_rank("seq", model, gpu, changed, parallel, limit=changed.seq_len - 1,
                                     margin_bytes=margin_bytes)) if changed.seq_len > 1 else 0
        if seq < seq_floor(run.seq_len):
            return None
        changed = changed.model_copy(update={"seq_len": seq})
        texts.append(f"seq {seq}")
        flags.append(f"--seq {seq}")
        kinds.append("seq")
    if len(kinds) < 2:
        return None
    return _rank_change(tuple(sorted(set(kinds), key=COSTS.get)), " + ".join(texts), " ".join(flags), changed, model,
                        gpu, parallel, base_peak, margin_bytes)


def rank_spare_room(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, cluster: ClusterPlan, *,
                    margin_bytes: int = 0) -> list[RankChange]:
    """For a layout that fits: how far micro-batch, sequence and rank can grow per rank, and checkpointing
    off when every rank still fits (as `vramplan.advice.spare_room` on one GPU)."""
    if not run.trains:
        return []
    base_peak = cluster.worst_rank.breakdown.peak_allocated_bytes
    hints = []
    batch = max_per_rank("batch", model, gpu, run, parallel, limit=DEFAULT_LIMITS["batch"], margin_bytes=margin_bytes)
    if batch > run.micro_batch_size:
        hints.append((("batch",), f"micro-batch up to {batch} per rank fits (from {run.micro_batch_size})",
                      f"--batch {batch}", run.model_copy(update={"micro_batch_size": batch})))
    seq_limit = max(run.seq_len, model.max_position_embeddings)
    exact_seq = max_per_rank("seq", model, gpu, run, parallel, limit=DEFAULT_LIMITS["seq"], margin_bytes=margin_bytes)
    seq = min(exact_seq, seq_limit)
    if seq > run.seq_len:
        shown = describe_rounded(seq, exact_seq, "the model's context window", " tokens")
        hints.append((("seq",), f"sequences up to {shown} fit (from {run.seq_len})", f"--seq {seq}",
                      run.model_copy(update={"seq_len": seq})))
    if run.uses_lora:
        exact_rank = max_per_rank("rank", model, gpu, run, parallel, limit=DEFAULT_LIMITS["rank"],
                                  margin_bytes=margin_bytes)
        rank = power_of_two_floor(exact_rank)
        if rank > run.lora_rank:
            shown = describe_rounded(rank, exact_rank, "power of two")
            hints.append((("rank",), f"LoRA rank up to {shown} fits (from {run.lora_rank})", f"--rank {rank}",
                          run.model_copy(update={"lora_rank": rank})))
    if run.gradient_checkpointing:
        hints.append((("checkpointing",), "gradient checkpointing off still fits (faster steps)",
                      "--no-gradient-checkpointing", run.model_copy(update={"gradient_checkpointing": False})))
    items = (_rank_change(*hint, model, gpu, parallel, base_peak, margin_bytes) for hint in hints)
    return [item for item in items if item is not None and item.fits]


def rank_advice(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, cluster: ClusterPlan, *,
                margin_bytes: int = 0, host_ram_bytes: int | None = None) -> RankAdvice:
    """Advice for a per-rank plan (`cluster`, planned with the same margin and host RAM): room to spare when
    it fits; else the fewest GPUs for this strategy (when the ranks do not fit), the cheapest strategy that
    fits on these GPUs, and the run changes that make the worst rank fit."""
    if cluster.fits:
        return RankAdvice(True, spare=rank_spare_room(model, gpu, run, parallel, cluster, margin_bytes=margin_bytes))
    fewest, searched = None, False
    if not ranks_fit(cluster):
        searched = True
        try:
            found = fewest_gpus(model, gpu, run, parallel, max_world=SHARD_MAX_WORLD, margin_bytes=margin_bytes)
        except InputError:
            found = None
        if found is not None:
            fewest = Layout(found.parallel, _plan(model, gpu, run, found.parallel, margin_bytes, host_ram_bytes))
    if not run.trains:
        split = fewest_tensor_parallel(model, gpu, run, parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)
        return RankAdvice(False, tensor_parallel=split, inference=True)
    ranked = ranked_strategies(model, gpu, run, parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)
    cheapest = next((item for item in ranked if item.fits), None)
    gpus_only = None if cheapest else next((item for item in ranked if ranks_fit(item.cluster)), None)
    changes = [] if ranks_fit(cluster) else rank_run_changes(model, gpu, run, parallel, cluster,
                                                            margin_bytes=margin_bytes)
    return RankAdvice(False, fewest, searched, cheapest, comm_volume(model, gpu, run, parallel), changes, [], gpus_only,
                      host_short=cluster.host if ranks_fit(cluster) else None)


def _volume_text(volume: CommVolume) -> str:
    text = f"{gib(volume.network_bytes)} GiB per rank and step between GPUs"
    if volume.pcie_bytes:
        text += f" + {gib(volume.pcie_bytes)} GiB over PCIe to the host"
    return text


def render_rank_advice(advice: RankAdvice, parallel: ParallelConfig) -> str:
    """Plain-text lines under `fit`'s per-rank tables; '' when there is nothing to say."""
    strategy = parallel.resolved_strategy
    if advice.fits:
        if not advice.spare:
            return ""
        lines = ["room to spare (per rank):"]
        lines += [f"  - {item.change}: headroom {gib(item.cluster.worst_rank.breakdown.headroom_bytes)} GiB  "
                  f"[{item.flags}]" for item in advice.spare]
        return "\n".join(lines)
    lines = ["to make it fit:"]
    if advice.inference:
        split = advice.tensor_parallel
        if split is None:
            lines.append(f"  - no tensor-parallel degree up to {GPUS_PER_NODE} fits (inference shards no training "
                         "state: FSDP and ZeRO do not apply)")
        else:
            lines.append(f"  - tensor parallelism over {split.world_size} GPUs: per-rank headroom "
                         f"{gib(split.cluster.worst_rank.breakdown.headroom_bytes)} GiB  "
                         f"[{layout_flags(split.parallel, parallel)}]")
        return "\n".join(lines)
    if advice.host_short is not None:
        host = advice.host_short
        lines.append(f"  - every rank fits; the host RAM of one node does not: needs {gib(host.required_bytes)} of "
                     f"{gib(host.host_ram_bytes)} GiB (--host-ram for the training node's)")
    if advice.fewest is not None:
        found = advice.fewest
        where = f"{found.parallel.nodes} nodes x {found.parallel.gpus}" if found.parallel.nodes > 1 \
            else f"{found.world_size}"
        headroom = found.cluster.worst_rank.breakdown.headroom_bytes
        lines.append(f"  - fewest GPUs for {strategy}: {where} (per-rank headroom {gib(headroom)} GiB, "
                     f"{_host_text(found.cluster)})  [{layout_flags(found.parallel, parallel)}]")
    elif advice.fewest_searched:
        lines.append(f"  - {strategy} does not fit on any count up to {SHARD_MAX_WORLD} GPUs with this run")
    best = advice.cheapest or advice.cheapest_gpus_only
    if best is not None and best.parallel == parallel:  # only the host fails, and every strategy's host too
        lines.append(f"  - no strategy or offload choice on these {parallel.world_size} GPUs fits this host RAM")
    elif best is not None:
        name = best.parallel.resolved_strategy + (f" with offload {best.parallel.offload}"
                                                  if best.parallel.offload != "none" else "")
        current = f"; {strategy} moves {gib(advice.current_volume.network_bytes)} GiB" if advice.current_volume else ""
        what = "fits" if advice.cheapest is not None else "fits the GPUs (not the host)"
        lines.append(f"  - cheapest strategy that {what} on these {parallel.world_size} GPUs: {name} "
                     f"({_volume_text(best.volume)}{current}), headroom "
                     f"{gib(best.cluster.worst_rank.breakdown.headroom_bytes)} GiB, {_host_text(best.cluster)}  "
                     f"[{layout_flags(best.parallel, parallel)}]")
    else:
        lines.append(f"  - no strategy or offload choice fits on these {parallel.world_size} GPUs")
    if advice.changes:
        lines.append(f"run changes on these {parallel.world_size} GPUs ({strategy}), each planned per rank:")
        for item in advice.changes:
            worst = item.cluster.worst_rank.breakdown
            verdict = "FITS" if item.fits else "still does not fit"
            saved = f"saves {gib(item.saved_bytes)} GiB" if item.saved_bytes >= 0 else \
                f"uses {gib(-item.saved_bytes)} GiB more"
            lines.append(f"  - {item.change}: {saved} per rank -> {verdict}, headroom {gib(worst.headroom_bytes)} GiB"
                         f"  [{item.flags}]")
    return "\n".join(lines)


__all__ = ["RankAdvice", "RankChange", "ShardStep", "layout_flags", "rank_advice", "rank_run_changes",
           "rank_spare_room", "render_rank_advice", "render_shard_step", "shard_step"]
