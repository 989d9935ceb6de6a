"""Searches over multi-GPU layouts, each answer a real per-rank plan (`plan_ranks`): the fewest GPUs
for a strategy, the strategy that fits with the least communication, a GPUs x strategy grid, and
the largest micro-batch, sequence or LoRA rank one rank holds.

A layout "fits" as `ClusterPlan.fits` says: every rank fits its GPU and the host does not fail
(`host_ram_bytes` None: the host is not checked). World sizes searched (`world_layouts`): 1 to
`gpus_per_node` (8) GPUs on one node, then whole nodes of `gpus_per_node` GPUs up to `max_world`;
counts that the tensor-parallel degree does not divide are skipped. Every count is planned (no
monotonicity is assumed: a node's host RAM can fail as more ranks load the checkpoint), so the
answer N fits and no searched count below it does.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from vramplan.distributed.comm_volume import CommVolume, comm_volume
from vramplan.errors import InputError
from vramplan.specs import GPUSpec, ModelSpec, RunConfig
from vramplan.specs.cluster import ClusterPlan
from vramplan.specs.parallel import FSDP_STRATEGIES, ZERO_STRATEGIES, ParallelConfig

GPUS_PER_NODE = 8
DEFAULT_MAX_WORLD = 64
SHARDED_STRATEGIES = ("ddp", "zero1", "zero2", "fsdp-grad-op", "fsdp", "fsdp-hybrid", "zero3")


@dataclass(frozen=True)
class Layout:
    """One planned layout: the ParallelConfig, its per-rank plan and its bytes moved per step."""

    parallel: ParallelConfig
    cluster: ClusterPlan
    volume: CommVolume | None = None

    @property
    def world_size(self) -> int:
        return self.parallel.world_size

    @property
    def fits(self) -> bool:
        return self.cluster.fits


@dataclass(frozen=True)
class GridRow:
    """One cell of `strategy_grid`: a strategy on N GPUs, its worst rank's need and the verdicts
    (`required_bytes` None and `reason` set when the strategy cannot run this model or layout)."""

    strategy: str
    world_size: int
    gpus: int
    nodes: int
    required_bytes: int | None
    capacity_bytes: int
    headroom_bytes: int | None
    fits: bool
    host_fits: bool | None
    reason: str = ""


def with_layout(parallel: ParallelConfig, **update) -> ParallelConfig | None:
    """`parallel` with fields replaced and validated again; None when the combination is refused."""
    fields = parallel.model_dump() | update
    if fields.get("strategy") == "single" and fields["gpus"] * fields["nodes"] > 1:
        fields["strategy"] = None
    try:
        return ParallelConfig(**fields)
    except ValidationError:
        return None


def layout_for(parallel: ParallelConfig, world_size: int, gpus_per_node: int = GPUS_PER_NODE) -> ParallelConfig | None:
    """N GPUs as one node when N <= gpus_per_node (or N is no multiple of it), else N / gpus_per_node nodes."""
    if world_size > gpus_per_node and world_size % gpus_per_node == 0:
        return with_layout(parallel, gpus=gpus_per_node, nodes=world_size // gpus_per_node)
    return with_layout(parallel, gpus=world_size, nodes=1)


def world_layouts(parallel: ParallelConfig, max_world: int = DEFAULT_MAX_WORLD,
                  gpus_per_node: int = GPUS_PER_NODE) -> list[ParallelConfig]:
    """The layouts `fewest_gpus` searches, fewest GPUs first (module docstring)."""
    counts = [*range(1, min(gpus_per_node, max_world) + 1),
              *range(2 * gpus_per_node, max_world + 1, gpus_per_node)]
    layouts = (layout_for(parallel, count, gpus_per_node) for count in counts)
    return [layout for layout in layouts if layout is not None]


def _plan(model, gpu, run, parallel, margin_bytes, host_ram_bytes) -> ClusterPlan:
    from vramplan.estimate import plan_ranks

    return plan_ranks(model, gpu, run, parallel=parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)


def fewest_gpus(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, *,
                max_world: int = DEFAULT_MAX_WORLD, min_world: int = 1, gpus_per_node: int = GPUS_PER_NODE,
                margin_bytes: int = 0, host_ram_bytes: int | None = None) -> Layout | None:
    """The fitting layout with the fewest GPUs (min_world to max_world) for `parallel`'s strategy and
    other knobs, searching `world_layouts`; None when none fits. An InputError (the strategy cannot
    run this model) propagates."""
    for layout in world_layouts(parallel, max_world, gpus_per_node):
        if layout.world_size < min_world:
            continue
        cluster = _plan(model, gpu, run, layout, margin_bytes, host_ram_bytes)
        if cluster.fits:
            return Layout(layout, cluster)
    return None


def fewest_tensor_parallel(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, *,
                           gpus_per_node: int = GPUS_PER_NODE, margin_bytes: int = 0,
                           host_ram_bytes: int | None = None) -> Layout | None:
    """The smallest tensor-parallel degree T (2 to gpus_per_node, on T GPUs of one node, `parallel`'s
    other knobs) at which the plan fits: how inference splits a model too big for one GPU. Degrees
    that do not divide the model's heads are skipped; None when none fits."""
    for degree in range(2, gpus_per_node + 1):
        layout = with_layout(parallel, gpus=degree, nodes=1, tensor_parallel=degree)
        if layout is None:
            continue
        try:
            cluster = _plan(model, gpu, run, layout, margin_bytes, host_ram_bytes)
        except InputError:  # T does not divide the heads, or the wrapper refuses it
            continue
        if cluster.fits:
            return Layout(layout, cluster)
    return None


def strategy_candidates(parallel: ParallelConfig) -> list[ParallelConfig]:
    """Every strategy and offload choice on `parallel`'s GPUs with its other knobs: ddp; ZeRO-1/2 with and
    without the optimizer offloaded; ZeRO-3 also with parameters offloaded; FSDP with and without
    CPUOffload; fsdp-hybrid only across nodes (on one node it is fsdp)."""
    choices = []
    for strategy in SHARDED_STRATEGIES:
        if strategy == "fsdp-hybrid" and parallel.nodes == 1:
            continue
        offloads = ["none"]
        if strategy in ZERO_STRATEGIES:
            offloads += ["optimizer"] + (["params"] if strategy == "zero3" else [])
        elif strategy in FSDP_STRATEGIES:
            offloads.append("params")
        for offload in offloads:
            device = parallel.offload_device if strategy == "zero3" and offload != "none" else "cpu"
            layout = with_layout(parallel, strategy=strategy, offload=offload, offload_device=device)
            if layout is not None:
                choices.append(layout)
    return choices


def ranked_strategies(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, *,
                      margin_bytes: int = 0, host_ram_bytes: int | None = None) -> list[Layout]:
    """Every candidate that can run here (`strategy_candidates`), planned, least communication first
    (`CommVolume.order_key`: no offload before offload, then network bytes per rank and step)."""
    planned = []
    for layout in strategy_candidates(parallel):
        try:
            cluster = _plan(model, gpu, run, layout, margin_bytes, host_ram_bytes)
        except InputError:  # this wrapper cannot run the model (e.g. a GPTQ base under FSDP)
            continue
        planned.append(Layout(layout, cluster, comm_volume(model, gpu, run, layout)))
    return sorted(planned, key=lambda item: item.volume.order_key)


def cheapest_strategy(model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, *,
                      margin_bytes: int = 0, host_ram_bytes: int | None = None) -> Layout | None:
    """The fitting strategy (and offload choice) on `parallel`'s GPUs that moves the fewest bytes per
    step (`ranked_strategies`), or None when none fits."""
    ranked = ranked_strategies(model, gpu, run, parallel, margin_bytes=margin_bytes, host_ram_bytes=host_ram_bytes)
    return next((item for item in ranked if item.fits), None)


def strategy_grid(model: ModelSpec, gpu: GPUSpec, run: RunConfig, strategies, gpu_counts, *,
                  parallel: ParallelConfig | None = None, margin_bytes: int = 0, host_ram_bytes: int | None = None,
                  gpus_per_node: int = GPUS_PER_NODE) -> list[GridRow]:
    """One GridRow per strategy (outer) and GPU count (inner), each a plan on `layout_for(count)`;
    the other knobs (offload, T, FSDP and DeepSpeed settings) from `parallel`."""
    base = parallel or ParallelConfig()
    rows = []
    for strategy in strategies:
        named = with_layout(base, strategy=strategy)
        for count in gpu_counts:
            layout = layout_for(named, count, gpus_per_node) if named is not None else None
            if layout is None or layout.resolved_strategy != strategy:
                rows.append(GridRow(strategy, count, 0, 0, None, gpu.capacity_bytes, None, False, None,
                                    f"{strategy} with these settings is not a valid layout on {count} GPUs"))
                continue
            try:
                cluster = _plan(model, gpu, run, layout, margin_bytes, host_ram_bytes)
            except InputError as exc:
                rows.append(GridRow(strategy, count, layout.gpus, layout.nodes, None, gpu.capacity_bytes, None, False,
                                    None, exc.message))
                continue
            worst = cluster.worst_rank.breakdown
            rows.append(GridRow(strategy, count, layout.gpus, layout.nodes, worst.required_bytes, worst.capacity_bytes,
                                worst.headroom_bytes, all(role.breakdown.fits for role in cluster.ranks),
                                cluster.host.fits))
    return rows


RANK_FIELDS = {"batch": "micro_batch_size", "seq": "seq_len", "rank": "lora_rank"}


def max_per_rank(dimension: str, model: ModelSpec, gpu: GPUSpec, run: RunConfig, parallel: ParallelConfig, *,
                 limit: int, margin_bytes: int = 0) -> int:
    """Largest micro-batch, sequence length or LoRA rank (`dimension` batch, seq or rank) at which every
    rank fits its GPU (0 when 1 does not). The worst rank's need never decreases as batch or sequence
    grow; rank is searched segment by segment between the optimizer's size thresholds, as
    `solvers.max_lora_rank` does on one GPU (`solvers.rank_segments` on the rank's model slice)."""
    from vramplan.distributed.tensor_parallel import tensor_parallel_slice
    from vramplan.memory.dtypes import resolve_dtypes
    from vramplan.solvers import largest_fitting_in, rank_segments

    field = RANK_FIELDS.get(dimension)
    if field is None:
        raise InputError("dimension", f"unknown '{dimension}'; allowed: {', '.join(RANK_FIELDS)}")
    if field == "lora_rank" and not run.uses_lora:
        raise InputError("method", f"LoRA rank applies to qlora and lora runs (got {run.method})")
    if limit < 1:
        return 0
    budget = gpu.capacity_bytes - margin_bytes

    def worst(value: int):
        cluster = _plan(model, gpu, run.model_copy(update={field: int(value)}), parallel, 0, None)
        return max((role.breakdown for role in cluster.ranks), key=lambda b: b.required_bytes)

    if worst(1).blocked_by:
        return 0

    def need(value: int) -> int:
        return worst(value).required_bytes

    if field != "lora_rank":
        return max(0, largest_fitting_in(need, budget, 1, limit))
    rank_model = tensor_parallel_slice(model, parallel.tensor_parallel)
    dtypes = resolve_dtypes(run, gpu, rank_model)
    for low, high in reversed(rank_segments(rank_model, run, dtypes, limit)):
        best = largest_fitting_in(need, budget, low, high)
        if best >= low:
            return best
    return 0


__all__ = ["DEFAULT_MAX_WORLD", "GPUS_PER_NODE", "GridRow", "Layout", "cheapest_strategy", "fewest_gpus",
           "fewest_tensor_parallel",
           "layout_for", "max_per_rank", "ranked_strategies", "strategy_candidates", "strategy_grid",
           "with_layout", "world_layouts"]
