"""Memory per component against sequence length: where activations or logits take over."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vramplan.components import allocated_names
from vramplan.plots.style import EDGE, component_label, component_style, new_figure, plain_text, short_count, to_gib

TAKEOVER_COMPONENTS = ("activations", "logits_loss", "kv_cache")


@dataclass(frozen=True)
class SeqComponents:
    """Bytes of each component in the peak phase at each sequence length."""

    model: str
    gpu: str
    run: object  # RunConfig
    seq_lens: np.ndarray
    components: dict[str, np.ndarray]  # allocated components, then allocator_reserve, cuda_context, nccl_buffers (0)
    peak_phase: np.ndarray  # phase name per point
    capacity_bytes: int
    max_seq_len: int = 0  # the solver's exact answer (vramplan.solvers.max_seq_len): the one "largest that fits"

    @property
    def required_bytes(self) -> np.ndarray:
        return sum(self.components.values())

    def largest_allocated(self) -> np.ndarray:
        """Name of the largest allocated component at each point."""
        allocated = [name for name in self.components if name in allocated_names()]
        stacked = np.vstack([self.components[name] for name in allocated])
        return np.array(allocated)[stacked.argmax(axis=0)]

    def takeovers(self) -> dict[str, int]:
        """First sequence length at which activations, logits or KV cache become the largest
        allocated component (only those that do, within the range)."""
        largest = self.largest_allocated()
        return {name: int(self.seq_lens[np.argmax(largest == name)])
                for name in TAKEOVER_COMPONENTS if (largest == name).any()}

    def longest_fitting(self) -> int:
        """Largest sequence length in the sweep whose required bytes fit (0: none)."""
        fits = self.required_bytes <= self.capacity_bytes
        return int(self.seq_lens[fits].max()) if fits.any() else 0


def seq_grid(seq_min: int, seq_max: int, points: int) -> np.ndarray:
    """Geometrically spaced, distinct integer sequence lengths from seq_min to seq_max."""
    return np.unique(np.geomspace(seq_min, seq_max, points).round().astype(np.int64))


def seq_components(model, gpu, run, seq_lens) -> SeqComponents:
    """One vectorized `phase_components` call; at each point keep the peak phase's components."""
    from vramplan.memory.dtypes import resolve_dtypes
    from vramplan.memory.overhead import required_bytes
    from vramplan.memory.plan import phase_components, phase_totals

    seq_lens = np.asarray(seq_lens, dtype=np.int64)
    phases = phase_components(model, gpu, run, resolve_dtypes(run, gpu, model), seq_len=seq_lens)
    names = list(phases)
    shape = seq_lens.shape
    totals = np.vstack([np.broadcast_to(total, shape) for total in phase_totals(phases).values()])
    peak = totals.argmax(axis=0)
    columns = np.arange(len(seq_lens))
    components = {}
    for name in allocated_names():
        per_phase = np.vstack([np.broadcast_to(phases[phase].get(name, 0), shape) for phase in names])
        components[name] = per_phase[peak, columns].astype(np.float64)
    peak_bytes = totals[peak, columns].astype(np.float64)
    components["cuda_context"] = np.full(shape, float(gpu.cuda_context_bytes))
    components["allocator_reserve"] = required_bytes(peak_bytes, run, gpu) - peak_bytes - components["cuda_context"]
    components["cuda_context"] = components.pop("cuda_context")  # keep the context on top of the stack
    components["nccl_buffers"] = np.zeros(shape)  # one GPU: no communicator
    from vramplan.solvers import max_seq_len

    return SeqComponents(model.name, gpu.key, run, seq_lens, components, np.array(names)[peak], gpu.capacity_bytes,
                         max_seq_len(model, gpu, run))


def seq_components_figure(data: SeqComponents):
    """Stacked areas (hatched) of every non-zero component, the capacity line, and markers
    where activations / logits become the largest component and where the run stops fitting."""
    shown = {name: values for name, values in data.components.items() if np.any(values > 0)}
    figure = new_figure(8.5, 5.2)
    axes = figure.add_subplot()
    styles = [component_style(name) for name in shown]
    axes.stackplot(data.seq_lens, *[to_gib(values) for values in shown.values()],
                   labels=[component_label(name) for name in shown], colors=[c for c, _ in styles],
                   hatch=[h for _, h in styles], edgecolor=EDGE, linewidth=0.4)
    capacity = to_gib(data.capacity_bytes)
    axes.axhline(capacity, color="black", linestyle="--", linewidth=1.6, label=f"{plain_text(data.gpu)} capacity ({capacity:.2f} GiB)")
    # Past ~2.5x the capacity the curves say nothing new and squash the part that matters.
    required = to_gib(data.required_bytes)
    top = max(min(float(required.max()), 2.5 * capacity), float(required.min()) * 1.3, capacity) * 1.08
    for name, seq in data.takeovers().items():
        if seq > data.seq_lens[0]:
            axes.axvline(seq, color="black", linestyle=":", linewidth=1.1)
            axes.text(seq, top * 0.97, f" {component_label(name)}\n largest from {short_count(seq)}",
                      fontsize=8, va="top", ha="left",
                      bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5})
    fit_text = f"fits up to seq {data.max_seq_len}, solved" if data.max_seq_len else "does not fit at any length"
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(lambda value, _pos: short_count(value))
    axes.set_xlim(data.seq_lens[0], data.seq_lens[-1])
    axes.set_ylim(0, top)
    axes.set_xlabel("sequence length (tokens)")
    axes.set_ylabel("GPU memory at the peak phase (GiB)")
    run = data.run
    axes.set_title(f"{plain_text(data.model)} on {plain_text(data.gpu)}, {run.method}, batch {run.micro_batch_size}: memory by component\n"
                   f"({fit_text})", fontsize=10)
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles[::-1], labels[::-1], fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
                frameon=False, handleheight=1.6)
    axes.grid(alpha=0.3)
    return figure
