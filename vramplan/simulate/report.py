"""Text for `vramplan fit --simulate`: the simulated peak and live set beside the plan."""
from __future__ import annotations

from vramplan.components import label, order
from vramplan.present import gib, table
from vramplan.simulate.compare import compare
from vramplan.simulate.engine import simulate


def render_simulation(model, gpu, run, breakdown) -> str:
    result = simulate(model, gpu, run)
    comparisons = compare(model, gpu, run, result)
    layers = " and ".join(str(n) for n in result.layers_simulated)
    lines = [
        f"simulated peak (fake tensors, {layers} layer(s) extrapolated to {model.num_hidden_layers}, "
        f"{result.seconds:.1f} s): {gib(result.peak_bytes)} GiB during {result.peak_phase.replace('_', ' ')} "
        f"(analytic {gib(breakdown.peak_allocated_bytes)} GiB, "
        f"{(breakdown.peak_allocated_bytes - result.peak_bytes) / max(result.peak_bytes, 1):+.1%})",
        "",
    ]
    analytic_parts = next(c.analytic_categories for c in comparisons if c.phase == result.peak_phase)
    names = sorted(set(result.categories_at_peak) | set(analytic_parts),
                   key=order)
    rows = [[label(name), gib(result.categories_at_peak.get(name, 0)),
             gib(analytic_parts.get(name, 0))] for name in names]
    lines.append(table(["live at the simulated peak", "simulated GiB", "analytic GiB"], rows))
    lines.append("simulated phase peaks (GiB): "
                 + ", ".join(f"{phase.replace('_', ' ')} {gib(value)}" for phase, value in result.phase_peaks.items()))
    if result.paged_optimizer_bytes:
        lines.append(f"paged optimizer state (CUDA managed memory): {gib(result.paged_optimizer_bytes)} GiB")
    return "\n".join(lines)
