"""vramplan: will this fine-tuning or inference run fit on this GPU, and if not, what to change.

    import vramplan
    plan = vramplan.estimate(model="13b", gpu="t4", method="qlora", seq_len=1024)
    plan.fits, plan.peak_allocated_bytes, plan.components()
    vramplan.plan_ranks(model_spec, gpu_spec, run).ranks  # one RankPlan per rank role, plus .host
"""
from vramplan.errors import InputError
from vramplan.estimate import estimate, make_run, plan, plan_ranks
from vramplan.specs import ClusterPlan, HostMemory, RankPlan

__version__ = "0.1.0"
__all__ = ["ClusterPlan", "HostMemory", "InputError", "RankPlan", "estimate", "make_run", "plan", "plan_ranks",
           "__version__"]
