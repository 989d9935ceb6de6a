"""Shared test settings: modest hypothesis budgets keep the suite fast on 2 cores."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "vramplan", max_examples=int(os.environ.get("VRAMPLAN_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("vramplan")
