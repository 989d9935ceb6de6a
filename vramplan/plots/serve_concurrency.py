"""vLLM: concurrent max-model-len requests the KV pool holds against max-model-len, one curve per GPU."""
from __future__ import annotations

from dataclasses import dataclass, replace

from vramplan.plots.style import log2_axes, new_figure, plain_text, series_style, short_count

DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass(frozen=True)
class ConcurrencyCurves:
    """`requests[j][k]`: requests of lengths[k] tokens vLLM runs at once on gpus[j] (0: vLLM does not start
    with that max-model-len), min(floor(vLLM's maximum concurrency), max_num_seqs)."""

    model: str
    weight_format: str
    gpus: tuple[str, ...]
    lengths: tuple[int, ...]
    requests: tuple[tuple[int, ...], ...]


def concurrency_curves(model, gpus, settings, lengths=DEFAULT_LENGTHS) -> ConcurrencyCurves:
    from vramplan.serve.vllm import plan_vllm
    from vramplan.serve.vllm_solvers import max_concurrent_requests

    lengths = tuple(length for length in lengths if length <= model.max_position_embeddings)
    table = tuple(tuple(max_concurrent_requests(model, gpu, replace(settings, max_model_len=length))
                        for length in lengths) for gpu in gpus)
    fmt = plan_vllm(model, gpus[0], replace(settings, max_model_len=lengths[0])).weight_format if gpus else ""
    return ConcurrencyCurves(model.name, fmt, tuple(g.key for g in gpus), lengths, table)


def concurrency_figure(curves: ConcurrencyCurves):
    """Log-log curves; a GPU on which vLLM starts at none of the lengths is named as such."""
    figure = new_figure(7.5, 4.8)
    axes = figure.add_subplot()
    any_point = False
    for j, gpu in enumerate(curves.gpus):
        points = [(length, count) for length, count in zip(curves.lengths, curves.requests[j]) if count > 0]
        any_point = any_point or bool(points)
        label = plain_text(gpu if points else f"{gpu} (does not start)")
        axes.plot([p[0] for p in points], [p[1] for p in points], label=label, **series_style(j))
    log2_axes(axes, curves.lengths, [short_count(length) for length in curves.lengths], any_point,
              "vLLM starts at none of these lengths")
    axes.set_xlabel("max-model-len (tokens per request)")
    axes.set_ylabel("concurrent requests at max-model-len")
    axes.set_title(f"{plain_text(curves.model)} ({plain_text(curves.weight_format)}) in vLLM: requests the KV pool holds",
                   fontsize=11)
    axes.legend(title="GPU", fontsize=8, title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    axes.grid(which="both", alpha=0.3)
    return figure
