"""Trace simulator: a real step of the HF architecture on fake tensors, counted as the CUDA
caching allocator would count it. Torch side: the planner core never imports this package.

`simulate(model_spec, gpu_spec, run) -> SimulationResult`; `compare(model_spec, gpu_spec, run)`
puts it beside the analytic plan per phase and category; `compare_with_results(path)` adds
recorded GPU measurements.
"""
from vramplan.simulate.compare import PhaseComparison, compare, compare_with_results
from vramplan.simulate.engine import SimulationResult, simulate

__all__ = ["PhaseComparison", "SimulationResult", "compare", "compare_with_results", "simulate"]
