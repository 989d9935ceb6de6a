"""Shared hypothesis profiles: "ci" (the default) and "nightly" (HYPOTHESIS_PROFILE=nightly).

Tests with their own `@settings(max_examples=...)` keep it; the rest - the memory laws in
tests/test_memory_laws.py - run the profile's budget. "ci" is sized so that a law stated
stronger than it holds fails reliably (the old "rank never lowers the peak" law failed 20 of 20
seeds at 300 examples) while the law file stays under ~60 s on 2 cores; "nightly" runs 10x.
VRAMPLAN_HYPOTHESIS_EXAMPLES overrides max_examples of whichever profile is loaded.
"""
import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=500, **_COMMON)
settings.register_profile("nightly", max_examples=5000, **_COMMON)

_profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if "VRAMPLAN_HYPOTHESIS_EXAMPLES" in os.environ:
    settings.register_profile(_profile + "-sized", settings.get_profile(_profile),
                              max_examples=int(os.environ["VRAMPLAN_HYPOTHESIS_EXAMPLES"]))
    _profile += "-sized"
settings.load_profile(_profile)

# Plan against the current releases, whatever this machine has installed: `--stack auto` (the default)
# reads installed versions, and the suite's expected bytes are those of the current stack.
os.environ["VRAMPLAN_STACK"] = "current"
