"""The most that fits: largest micro-batch, sequence length and LoRA rank; smallest GPU; largest model.

Sizes are solved, not guessed. Every answer `x` satisfies: the plan at `x` fits (required +
margin <= capacity) and the plan at `x + 1` does not (or `x` is the limit). This is the one
definition of "largest that fits"; every view (fit's room to spare, `max`, `compare`, the TUI,
the report) calls these functions, and a view that rounds says so.

The search runs on the scalar (pure-Python) path of the memory model, so `fit` needs no numpy:
- batch and sequence: memory never decreases as they grow (every term is a non-negative
  multiple of tokens, or eager attention's s^2), so a galloping search (1, 2, 4, ... then
  bisection of the last gap) finds the answer in about 2 log2(answer) plans.
- LoRA rank is not monotone everywhere: bitsandbytes' 8-bit and paged optimizers switch a
  tensor's state format when its element count r x dim crosses the entry's `min_8bit_size`
  (4096) or `min_paged_size` (1e5) (vramplan/optimizers.py, `size_thresholds`). Between the breakpoints r = ceil(threshold /
  dim), one per distinct LoRA tensor dim, the peak is monotone, so each segment is bisected,
  highest segment first. No rank is evaluated one by one, so a limit of 2**31 costs as
  little as 4096.
`fits_many` / `largest_monotone` are the vectorized (numpy) verdicts, kept for sweeps and plots.
The verdict is `memory.overhead.required_bytes`, the rule `plan` uses.
"""
from __future__ import annotations

from vramplan.errors import InputError
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.overhead import required_bytes
from vramplan.memory.plan import peak_allocated_bytes
from vramplan.optimizers import get_optimizer
from vramplan.specs import GPUSpec, ModelSpec, RunConfig

DEFAULT_LIMITS = {"batch": 4096, "seq": 1_048_576, "rank": 4096}
_SPLIT = 64


def resolve_specs(model, gpu) -> tuple[ModelSpec, GPUSpec]:
    """(ModelSpec, GPUSpec) from what `vramplan.estimate` accepts: names, paths, sizes or spec objects."""
    if not isinstance(model, ModelSpec):
        from vramplan.resolve import resolve_model

        model = resolve_model(str(model))
    if not isinstance(gpu, GPUSpec):
        from vramplan.gpus import get_gpu

        gpu = get_gpu(str(gpu))
    return model, gpu


def _run_or_default(run) -> RunConfig:
    if run is None:
        return RunConfig()
    if isinstance(run, dict):
        from vramplan.estimate import make_run

        return make_run(**run)
    return run


def _check_margin(margin_bytes: int) -> int:
    if margin_bytes < 0:
        raise InputError("margin", f"must be zero or more bytes (got {margin_bytes})")
    return int(margin_bytes)


def _required_scalar(model, gpu, run, dtypes, field, value) -> int:
    """`required_bytes` of the run with one size set to `value` (the scalar path: no numpy)."""
    peak = peak_allocated_bytes(model, gpu, run, dtypes, **{field: int(value)})
    return int(required_bytes(int(peak), run, gpu))


def largest_fitting_in(need, budget: int, low: int, high: int) -> int:
    """Largest x in [low, high] with need(x) <= budget, for a need() that never decreases on
    [low, high]; low - 1 when even low does not fit.

    Galloping from `low` (steps double, or jump to where the last two points extrapolate the
    budget) brackets the answer; then the bracket shrinks by interpolation on the bytes,
    alternating with bisection whenever a step did not halve it, so at most about
    4 log2(high - low) plans and usually a handful. Every probe is a real plan, so the
    answer is exact: need(x) <= budget and need(x + 1) > budget (or x is high).
    """
    if low > high:
        return low - 1
    need_good = need(low)
    if need_good > budget:
        return low - 1
    good, step = low, 1
    while True:  # gallop until a probe does not fit
        probe = min(good + step, high)
        if probe == good:
            return good
        need_probe = need(probe)
        if need_probe > budget:
            bad, need_bad = probe, need_probe
            break
        slope = (need_probe - need_good) / (probe - good)
        jump = int((budget - need_probe) / slope) + 1 if slope > 0 else 0
        good, need_good = probe, need_probe
        step = max(2 * step, jump)
    bisect = False
    while bad - good > 1:  # invariant: good fits, bad does not
        width = bad - good
        if bisect or need_bad == need_good:
            middle = (good + bad) // 2
        else:
            guess = good + int((budget - need_good) * width / (need_bad - need_good))
            middle = min(max(guess, good + 1), bad - 1)
        need_middle = need(middle)
        if need_middle <= budget:
            good, need_good = middle, need_middle
        else:
            bad, need_bad = middle, need_middle
        bisect = not bisect and 2 * (bad - good) > width
    return good


def _solve(field, model, gpu, run, limit, margin_bytes) -> int:
    model, gpu = resolve_specs(model, gpu)
    run = _run_or_default(run)
    budget = gpu.capacity_bytes - _check_margin(margin_bytes)
    limit = int(limit)
    if limit < 1:
        return 0
    dtypes = resolve_dtypes(run, gpu, model)
    from vramplan.estimate import blocked_by

    if blocked_by(gpu, run, dtypes):  # the GPU cannot run it at any size (plan says why)
        return 0

    def need(value):
        return _required_scalar(model, gpu, run, dtypes, field, value)

    if field != "lora_rank":
        return max(0, largest_fitting_in(need, budget, 1, limit))
    for low, high in reversed(rank_segments(model, run, dtypes, limit)):
        best = largest_fitting_in(need, budget, low, high)
        if best >= low:
            return best
    return 0


def rank_segments(model: ModelSpec, run: RunConfig, dtypes, limit: int) -> list[tuple[int, int]]:
    """[(low, high)] ranks in [1, limit] between which no LoRA tensor changes optimizer-state format.

    A LoRA tensor holds r x dim elements (dim = in_features for A, out_features for B); it
    crosses a threshold T of the run's optimizer at r = ceil(T / dim), so each such r starts a segment.
    """
    from vramplan.memory.lora import lora_tensor_groups

    dims = {group.rows * group.cols for group in lora_tensor_groups(model, run.lora_targets, 1, dtypes.moe_experts)}
    thresholds = get_optimizer(run.optimizer).size_thresholds
    starts = {1} | {-(-threshold // dim) for dim in dims for threshold in thresholds}
    starts = sorted(start for start in starts if 1 <= start <= limit)
    return [(start, (starts[i + 1] - 1) if i + 1 < len(starts) else limit) for i, start in enumerate(starts)]


def max_micro_batch(model: str | ModelSpec, gpu: str | GPUSpec, run: RunConfig | None = None,
                    limit: int = DEFAULT_LIMITS["batch"], *, margin_bytes: int = 0) -> int:
    """Largest micro-batch size that fits, keeping `margin_bytes` free (0 when batch 1 does not).

    `model` and `gpu` take what `vramplan.estimate` takes (names, paths, "24GiB", specs);
    `run` is a RunConfig or a dict of its fields (default: RunConfig()).
    """
    return _solve("micro_batch_size", model, gpu, run, limit, margin_bytes)


def max_seq_len(model: str | ModelSpec, gpu: str | GPUSpec, run: RunConfig | None = None,
                limit: int = DEFAULT_LIMITS["seq"], *, margin_bytes: int = 0) -> int:
    """Largest sequence length (prompt tokens for inference) that fits, keeping `margin_bytes` free
    (0 when 1 token does not). Arguments as `max_micro_batch`."""
    return _solve("seq_len", model, gpu, run, limit, margin_bytes)


def max_lora_rank(model: str | ModelSpec, gpu: str | GPUSpec, run: RunConfig | None = None,
                  limit: int = DEFAULT_LIMITS["rank"], *, margin_bytes: int = 0) -> int:
    """Largest LoRA rank that fits, keeping `margin_bytes` free (0 when rank 1 does not).

    Exact although rank is not monotone for 8-bit/paged optimizers: see `rank_segments`.
    Arguments as `max_micro_batch`; the run must be qlora or lora.
    """
    run = _run_or_default(run)
    if not run.uses_lora:
        raise InputError("method", f"LoRA rank applies to qlora and lora runs (got {run.method})")
    return _solve("lora_rank", model, gpu, run, limit, margin_bytes)


def max_size(dimension: str, model, gpu, run: RunConfig | None = None, limit: int | None = None, *,
             margin_bytes: int = 0) -> int:
    """`max_micro_batch`, `max_seq_len` or `max_lora_rank` by name: batch, seq or rank."""
    solvers = {"batch": max_micro_batch, "seq": max_seq_len, "rank": max_lora_rank}
    if dimension not in solvers:
        raise InputError("dimension", f"unknown '{dimension}'; allowed: batch, seq, rank")
    limit = DEFAULT_LIMITS[dimension] if limit is None else limit
    return solvers[dimension](model, gpu, run, limit=limit, margin_bytes=margin_bytes)


def power_of_two_floor(value: int) -> int:
    """The largest power of two <= value (0 for 0): how room-to-spare rounds a rank."""
    return 1 << (int(value).bit_length() - 1) if value > 0 else 0


def describe_rounded(value: int, exact: int, how: str, unit: str = "") -> str:
    """'64 (power of two; exact maximum 85)' when a view rounds the solver's answer, else '85'
    (`unit`, e.g. ' tokens', follows the number)."""
    return f"{exact}{unit}" if value == exact else f"{value}{unit} ({how}; exact maximum {exact})"


# --- vectorized verdicts (numpy), for sweeps and plots ------------------------------------------

def fits_many(model: ModelSpec, gpu: GPUSpec, run: RunConfig, dtypes=None, *, margin_bytes: int = 0, **sizes):
    """Boolean array: does the run fit at each of `sizes` (micro_batch_size/seq_len/lora_rank arrays)?"""
    import numpy as np

    dtypes = dtypes or resolve_dtypes(run, gpu, model)
    peak = peak_allocated_bytes(model, gpu, run, dtypes, **sizes)
    return np.asarray(required_bytes(peak, run, gpu) + margin_bytes <= gpu.capacity_bytes)


def largest_monotone(fits, limit: int) -> int:
    """Largest x in [1, limit] with fits(x), for a vectorized fits() that turns False once.

    `fits` takes an int64 array of candidates and returns a boolean array. Returns 0 when
    even 1 does not fit. Powers of two first, then a 64-way split of the last gap.
    """
    import numpy as np

    if limit < 1:
        return 0
    candidates = np.unique(np.append(1 << np.arange(int(limit).bit_length()), limit)).astype(np.int64)
    candidates = candidates[candidates <= limit]
    ok = fits(candidates)
    if not ok[0]:
        return 0
    if ok.all():
        return int(limit)
    first_bad = int(np.argmin(ok))
    low, high = int(candidates[first_bad - 1]), int(candidates[first_bad])
    while high - low > 1:  # invariant: low fits, high does not
        inner = np.unique(np.linspace(low, high, _SPLIT + 2).astype(np.int64))[1:-1]
        inner = inner[(inner > low) & (inner < high)]
        ok = fits(inner)
        if ok.all():
            low = int(inner[-1])
            continue
        first_bad = int(np.argmin(ok))
        high = int(inner[first_bad])
        if first_bad:
            low = int(inner[first_bad - 1])
    return low


def _plan_or_none(model, gpu, run, margin_bytes=0):
    """The plan, or None when the run cannot run on that GPU/model at all (e.g. bf16 on a T4)."""
    from vramplan.estimate import plan

    try:
        return plan(model, gpu, run, margin_bytes=margin_bytes)
    except InputError:
        return None


def smallest_gpu(model: str | ModelSpec, run: RunConfig | None = None, gpus: list[GPUSpec] | None = None, *,
                 margin_bytes: int = 0) -> GPUSpec | None:
    """The GPU with the least capacity (of `gpus`, default every profile) on which the run fits."""
    if gpus is None:
        from vramplan.gpus import list_gpus

        gpus = list_gpus()
    if not isinstance(model, ModelSpec):
        from vramplan.resolve import resolve_model

        model = resolve_model(str(model))
    run = _run_or_default(run)
    for gpu in sorted(gpus, key=lambda g: (g.capacity_bytes, g.key)):
        result = _plan_or_none(model, gpu, run, margin_bytes)
        if result is not None and result.fits:
            return gpu
    return None


def largest_model(gpu: str | GPUSpec, run: RunConfig | None = None, models: list[ModelSpec] | None = None, *,
                  margin_bytes: int = 0) -> ModelSpec | None:
    """The model with the most parameters (of `models`, default the catalog) whose run fits on `gpu`."""
    from vramplan.memory.parameters import parameter_count

    if models is None:
        from vramplan.catalog import list_models

        models = list_models()
    if not isinstance(gpu, GPUSpec):
        from vramplan.gpus import get_gpu

        gpu = get_gpu(str(gpu))
    run = _run_or_default(run)
    for model in sorted(models, key=lambda m: (-parameter_count(m), m.name)):
        result = _plan_or_none(model, gpu, run, margin_bytes)
        if result is not None and result.fits:
            return model
    return None


__all__ = [
    "DEFAULT_LIMITS", "describe_rounded", "fits_many", "largest_fitting_in", "largest_model",
    "largest_monotone", "max_lora_rank", "max_micro_batch", "max_seq_len", "max_size", "power_of_two_floor",
    "rank_segments", "resolve_specs", "smallest_gpu",
]
