"""The planner's Adafactor state and step temporaries equal what transformers' Adafactor allocates.

The planner models `transformers.optimization.Adafactor` (beta1=None, the HF Trainer's
`adafactor`); the trace simulator runs that optimizer's real `step` on fake tensors. In the
optimizer phase, state + step temporaries must agree to within a few allocator blocks (the
simulator moves each parameter's new 0-dim RMS tensor from state to temporaries; the sum is
the same), for fp32 trainables (2 fp32 copies per tensor) and bf16 ones (4: the casts too).
"""
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramplan.catalog import get_model  # noqa: E402
from vramplan.estimate import make_run  # noqa: E402
from vramplan.gpus import get_gpu  # noqa: E402
from vramplan.simulate import compare  # noqa: E402

STEP_CATEGORIES = ("optimizer_state", "optimizer_step_temp")
CASES = {
    "full-fp32-master": dict(method="full"),
    "full-pure-bf16": dict(method="full", full_precision="pure"),
    "lora-fp32": dict(method="lora"),
    "lora-bf16": dict(method="lora", lora_dtype="bf16"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fields", CASES.values(), ids=CASES.keys())
def test_adafactor_optimizer_phase_matches_the_simulated_step(fields):
    run = make_run(optimizer="adafactor", seq_len=64, **fields)
    step = next(c for c in compare(get_model("qwen2.5-0.5b"), get_gpu("h100"), run) if c.phase == "optimizer")
    analytic = sum(step.analytic_categories.get(name, 0) for name in STEP_CATEGORIES)
    simulated = sum(step.simulated_categories.get(name, 0) for name in STEP_CATEGORIES)
    assert abs(analytic - simulated) <= 4 * 512, step.describe()
    assert abs(step.relative_gap) < 1e-5, step.describe()
