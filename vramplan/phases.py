"""Which analytic phases a simulated or a measured phase spans: one mapping for every comparison.

The analytic model (`memory.plan.phase_components`) has six phases: forward, loss_backward,
layer_backward, backward_end, optimizer, generate. The simulator splits backward once, where
the gradient of the lm_head input exists (loss_backward, then layer_backward up to all
gradients: it has no separate backward_end). The harness resets the CUDA peak around
`loss.backward()` as a whole, so its one "backward" spans all three backward phases.
A simulated or measured phase's peak is the largest of the analytic phases it spans.
No torch, no numpy: validation's case planner and the report import it.
"""
from __future__ import annotations

# analytic phase -> the simulator's phase that contains it
SIMULATED_PHASE = {
    "forward": "forward",
    "loss_backward": "loss_backward",
    "layer_backward": "layer_backward",
    "backward_end": "layer_backward",
    "optimizer": "optimizer",
    "generate": "generate",
}
# simulator phase -> the harness's measured phase that contains it
MEASURED_PHASE = {
    "forward": "forward",
    "loss_backward": "backward",
    "layer_backward": "backward",
    "optimizer": "optimizer",
    "generate": "generate",
}


def _group(mapping: dict[str, str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for analytic, covering in mapping.items():
        out[covering] = (*out.get(covering, ()), analytic)
    return out


# simulated phase -> the analytic phases it spans
ANALYTIC_PHASES_OF_SIMULATED = _group(SIMULATED_PHASE)
# measured phase -> the analytic phases it spans
ANALYTIC_PHASES_OF_MEASURED = _group({analytic: MEASURED_PHASE[simulated] for analytic, simulated in SIMULATED_PHASE.items()})
# the measured phases of a step (training or generation), in order; "load" is measured before any step
MEASURED_STEP_PHASES = tuple(ANALYTIC_PHASES_OF_MEASURED)
