"""ClusterPlan: the planner's answer per rank role, plus the host (CPU) side.

A `Breakdown` describes one device. A multi-GPU run has ranks that hold different bytes:
rank 0 may load the full CPU copy (`sync_module_states`, FSDP's `low_memory` loading),
pipeline stage 0 holds the embedding and the last stage the LM head. Ranks that hold the
same bytes share one `RankPlan` (one role), so an 8-GPU FSDP plan is "rank 0" and
"ranks 1-7", two Breakdowns, not eight.

How issue 17 fills it (nothing here computes sharding):
- `strategy` ("single", later "ddp", "fsdp", "zero3", ...), `world_size` = GPUs per node x
  `nodes`;
- `ranks`: one RankPlan per role, each with the ranks that play it and that role's
  Breakdown (its components already divided by the shard count; `duty` says what sets the
  role apart, e.g. "loads the full CPU copy");
- `host`: named components in bytes, summed over the ranks of the node that needs the most
  (offloaded optimizer state and parameters with DeepSpeed's buffer factor, pinned transfer
  buffers, the loading spike: node 0 when rank 0 loads the CPU copy), `host_ram_bytes` from
  `--host-ram` or the machine.

The single-GPU plan (`ClusterPlan.single`) is one rank holding exactly today's Breakdown
and a host side whose modelled components are zero (no offload) and whose unmodelled
ones are named in `HostMemory.not_modelled`, never given a number.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vramplan.specs.breakdown import Breakdown

HOST_COMPONENTS = ("offloaded_optimizer_state", "offloaded_parameters", "pinned_buffers", "loading_spike")
"""Host-RAM components a plan may name, in display order; their bytes are one node's."""

SINGLE_GPU_HOST_NOT_MODELLED = ("pinned_buffers", "loading_spike")
"""What a single-GPU run holds in host RAM that vramplan does not count: the DataLoader's and
the copy engine's pinned buffers, and the peak while from_pretrained reads the checkpoint."""


class HostMemory(BaseModel):
    """Host (CPU) RAM of one node: named components in bytes, and the verdict when the capacity is known.

    `components` holds only what the plan counts; `not_modelled` names the host components
    that exist but are not counted, so `required_bytes` is a lower bound whenever it is
    non-empty, and `fits` says whether the counted bytes fit (None when `host_ram_bytes` is unknown).
    `terms` holds, per counted component, the terms it sums (`vramplan.memory.terms.as_dict`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    components: dict[str, int] = {}
    terms: dict[str, tuple[dict, ...]] = {}
    not_modelled: tuple[str, ...] = ()
    host_ram_bytes: int | None = Field(default=None, ge=0)
    """Capacity of the node's RAM, from `--host-ram` or the machine; None when not known."""

    @model_validator(mode="after")
    def _named_components(self):
        unknown = [name for name in (*self.components, *self.not_modelled) if name not in HOST_COMPONENTS]
        if unknown:
            raise ValueError(f"unknown host components {unknown}; allowed: {', '.join(HOST_COMPONENTS)}")
        negative = [name for name, value in self.components.items() if value < 0]
        if negative:
            raise ValueError(f"host components {negative} must be zero or more bytes")
        both = set(self.components) & set(self.not_modelled)
        if both:
            raise ValueError(f"host components {sorted(both)} are both counted and not modelled")
        return self

    @property
    def training_bytes(self) -> int:
        """What the node holds while it trains: every component but the loading spike."""
        return sum(value for name, value in self.components.items() if name != "loading_spike")

    @property
    def required_bytes(self) -> int:
        """The larger of the loading spike and the training-time components: the checkpoint is read
        (and its CPU copy freed) before the optimizer state is offloaded, as DeepSpeed's own host
        estimate takes max(4 x params x GPUs per node, 16 x params) (estimate_zero2_model_states_mem_needs)."""
        return max(self.components.get("loading_spike", 0), self.training_bytes)

    @property
    def headroom_bytes(self) -> int | None:
        return None if self.host_ram_bytes is None else self.host_ram_bytes - self.required_bytes

    @property
    def fits(self) -> bool | None:
        """Whether the counted components fit the node's RAM; None when its size is not known."""
        return None if self.host_ram_bytes is None else self.required_bytes <= self.host_ram_bytes

    def as_data(self) -> dict:
        """JSON-ready data: components, what is not modelled, required, capacity, headroom, fits."""
        return {
            "components": dict(self.components), "not_modelled": list(self.not_modelled),
            "training_bytes": self.training_bytes,
            "required_bytes": self.required_bytes, "host_ram_bytes": self.host_ram_bytes,
            "headroom_bytes": self.headroom_bytes, "fits": self.fits,
        }


def ranks_label(ranks: tuple[int, ...]) -> str:
    """'rank 0', 'ranks 1-3' (a contiguous run) or 'ranks 0, 4, 8' (pipeline stages across data-parallel groups)."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if list(ranks) == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return "ranks " + ", ".join(str(rank) for rank in ranks)


class RankPlan(BaseModel):
    """One rank role: the ranks that play it (sorted, distinct) and the Breakdown each of them holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ranks: tuple[int, ...] = Field(min_length=1)
    breakdown: Breakdown
    duty: str = ""
    """What sets this role apart from the others ("loads the full CPU copy"); empty when all ranks are alike."""

    @model_validator(mode="after")
    def _sorted_distinct(self):
        if any(rank < 0 for rank in self.ranks) or list(self.ranks) != sorted(set(self.ranks)):
            raise ValueError(f"ranks must be distinct, sorted and zero or more (got {list(self.ranks)})")
        return self

    @property
    def name(self) -> str:
        return ranks_label(self.ranks)

    @property
    def count(self) -> int:
        return len(self.ranks)

    def as_data(self) -> dict:
        """JSON-ready summary of the role; its full Breakdown is the top level when it is the worst rank."""
        b = self.breakdown
        return {
            "name": self.name, "ranks": list(self.ranks), "count": self.count, "duty": self.duty,
            "gpu": b.gpu, "peak_phase": b.peak_phase, "peak_allocated_bytes": b.peak_allocated_bytes,
            "required_bytes": b.required_bytes, "capacity_bytes": b.capacity_bytes,
            "headroom_bytes": b.headroom_bytes, "fits": b.fits, "components": b.components(),
        }


class ClusterPlan(BaseModel):
    """A plan for every rank of a run: one RankPlan per role covering ranks 0..world_size-1 once, and the host side.

    It `fits` when every rank fits and the host does not fail (`host.fits` is not False: an
    unknown host capacity does not block, and issue 17 reads it from the machine by default).
    `worst_rank` is the role that does not fit, else the one with the least headroom.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = "single"
    nodes: int = Field(default=1, ge=1)
    world_size: int = Field(ge=1)
    ranks: tuple[RankPlan, ...] = Field(min_length=1)
    host: HostMemory = HostMemory()

    @model_validator(mode="after")
    def _every_rank_once(self):
        covered = sorted(rank for role in self.ranks for rank in role.ranks)
        if covered != list(range(self.world_size)):
            raise ValueError(f"rank roles must cover ranks 0-{self.world_size - 1} exactly once (got {covered})")
        if self.world_size % self.nodes:
            raise ValueError(f"world_size {self.world_size} is not a multiple of nodes {self.nodes}")
        return self

    @classmethod
    def single(cls, breakdown: Breakdown, *, host_ram_bytes: int | None = None) -> ClusterPlan:
        """One GPU: rank 0 holds exactly `breakdown`; nothing is offloaded to the host."""
        host = HostMemory(components={"offloaded_optimizer_state": 0, "offloaded_parameters": 0},
                          not_modelled=SINGLE_GPU_HOST_NOT_MODELLED, host_ram_bytes=host_ram_bytes)
        return cls(strategy="single", world_size=1, ranks=(RankPlan(ranks=(0,), breakdown=breakdown),), host=host)

    @property
    def fits(self) -> bool:
        return all(role.breakdown.fits for role in self.ranks) and self.host.fits is not False

    @property
    def worst_rank(self) -> RankPlan:
        return min(self.ranks, key=lambda role: (role.breakdown.fits, role.breakdown.headroom_bytes))

    def json_additions(self) -> dict:
        """What `fit --json` adds beside the worst rank's Breakdown: strategy, world size, ranks and host."""
        return {
            "strategy": self.strategy, "nodes": self.nodes, "world_size": self.world_size,
            "ranks": [role.as_data() for role in self.ranks], "host": self.host.as_data(),
        }
