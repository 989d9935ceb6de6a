"""Validated inputs and outputs of the planner (pydantic v2, no torch)."""
from vramplan.specs.breakdown import Breakdown
from vramplan.specs.cluster import ClusterPlan, HostMemory, RankPlan
from vramplan.specs.gpu import GPUSpec
from vramplan.specs.model import LinearShape, ModelSpec
from vramplan.specs.run import RunConfig

__all__ = ["Breakdown", "ClusterPlan", "GPUSpec", "HostMemory", "LinearShape", "ModelSpec", "RankPlan", "RunConfig"]
