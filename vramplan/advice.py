"""What to change when a run does not fit, and what room is left when it does.

Every suggestion is the memory model re-run on the changed config (`plan`), never a table
of savings. Kinds of change are grouped into tiers of what they cost the user (`TIERS`):
a flag (smaller micro-batch with more gradient accumulation, shorter sequences, gradient
checkpointing, an 8-bit/paged/Adafactor optimizer, an fp8 KV cache), the adapter or the
training code (LoRA rank, target modules, chunked cross-entropy, skipping k-bit preparation,
transformers 4.x's MoE layout, pure 16-bit full fine-tuning), the method, and another model
or GPU. `COSTS` orders every kind in that sequence. When no single cheap change is enough,
the cheapest combination of them that fits is offered too: combinations are tried in order
of total cost, so the first that fits is the cheapest.

`advise` never hides a change that alone makes the run fit, nor the change that saves the
most in each tier; the rest of `limit` goes to the biggest savers. Changes that fit come
first (cheapest first), then those that help but are not enough alone (tier by tier,
biggest saving first). For a run that already fits it lists "room to spare" instead: the
largest micro-batch, sequence and rank that still fit, and checkpointing off when that fits.
`render_fit_advice` (what `fit` prints) follows the list with the multi-GPU step of a run that
does not fit (`vramplan.distributed.advice.shard_step`).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from vramplan.errors import InputError
from vramplan.memory.dtypes import DTYPE_BYTES, resolve_dtypes
from vramplan.memory.lora import ATTENTION_MODULES
from vramplan.optimizers import all_optimizers, get_optimizer
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.run import ALL_LINEAR

# What each kind of change costs the user, cheapest tier first; within a tier, cheapest first.
TIERS = (
    ("a flag", ("batch", "seq", "checkpointing", "optimizer", "kv_cache")),
    ("the adapter or the training code",
     ("rank", "targets", "chunked_loss", "kbit_prep", "moe_experts", "full_precision")),
    ("the method", ("method",)),
    ("another model or GPU", ("model", "gpu")),
)
# Distinct powers of two in tier order, so a combination's total orders combinations by their
# most expensive change first.
COSTS = {kind: 1 << i for i, kind in enumerate(kind for _, kinds in TIERS for kind in kinds)}
TIER_OF = {kind: index for index, (_, kinds) in enumerate(TIERS) for kind in kinds}
CHEAP_KINDS = TIERS[0][1] + TIERS[1][1]
SEQ_STEP = 64  # suggested sequence lengths are rounded down to a multiple of this
MIN_SEQ = 64  # shorter than this is no longer a useful training sequence


@dataclass(frozen=True)
class Advice:
    """One suggested change and the re-planned result."""

    change: str  # human text
    flags: str  # the CLI flags that apply it
    run: RunConfig
    model: ModelSpec
    gpu: GPUSpec
    breakdown: Breakdown  # plan(model, gpu, run)
    saved_bytes: int  # old peak_allocated_bytes - new peak_allocated_bytes (negative: uses more)
    fits: bool
    kinds: tuple[str, ...] = ()  # which COSTS entries it uses
    cost: int = 0

    def to_dict(self) -> dict:
        return {
            "change": self.change, "flags": self.flags, "kinds": list(self.kinds), "cost": self.cost,
            "fits": self.fits, "saved_bytes": self.saved_bytes, "model": self.model.name, "gpu": self.gpu.key,
            "peak_allocated_bytes": self.breakdown.peak_allocated_bytes,
            "required_bytes": self.breakdown.required_bytes, "headroom_bytes": self.breakdown.headroom_bytes,
            "run": self.run.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class _Change:
    kinds: tuple[str, ...]
    change: str
    flags: str
    run: RunConfig
    model: ModelSpec | None = None
    gpu: GPUSpec | None = None


def _plan(model, gpu, run):
    from vramplan.estimate import plan

    try:
        return plan(model, gpu, run)
    except InputError:  # the change is impossible here (e.g. unknown targets on another model)
        return None


def nice_seq(seq_len: int) -> int:
    return seq_len - seq_len % SEQ_STEP if seq_len >= SEQ_STEP else seq_len


def seq_floor(seq_len: int) -> int:
    """The shortest sequence worth suggesting: cutting more than 4x changes the task, not the budget."""
    return max(min(MIN_SEQ, seq_len - 1), seq_len // 4)


_TRIAL_DIVISOR_LIMIT = 1 << 20


def divisors_below(total: int, below: int) -> list[int]:
    """Divisors of `total` under `below`, largest first, built from its prime factors.

    Factors come from trial division by 2 and odd numbers up to 2**20 (what is left above that
    is kept as one factor, so a product of two primes over 2**20 is not split): at most 2**19
    steps whatever `total` is, where a loop over every number below `below` ran for minutes at
    `--batch 2147483648`."""
    factors: dict[int, int] = {}
    rest, divisor = total, 2
    while divisor * divisor <= rest and divisor <= _TRIAL_DIVISOR_LIMIT:
        while rest % divisor == 0:
            factors[divisor] = factors.get(divisor, 0) + 1
            rest //= divisor
        divisor += 1 if divisor == 2 else 2
    if rest > 1:
        factors[rest] = factors.get(rest, 0) + 1
    divisors = [1]
    for prime, power in factors.items():
        divisors = [d * prime**k for d in divisors for k in range(power + 1)]
    return sorted((d for d in divisors if d < below), reverse=True)


def largest_fitting(candidates: list, fits) -> list:
    """[the first of `candidates` (largest first) for which `fits` holds] by bisection, else [the
    last one]: what `_best_of_kind` would pick from all of them, since memory never decreases as
    the micro-batch grows, in log2(len) plans instead of one plan per candidate."""
    low, high = 0, len(candidates)  # fits is False before low... answer in [low, high]
    while low < high:
        middle = (low + high) // 2
        if fits(candidates[middle]):
            high = middle
        else:
            low = middle + 1
    return candidates[low:low + 1] or candidates[-1:]


def _targets_flag(targets) -> str:
    return ",".join(targets)


# -- single changes: each returns the candidates of one kind (they are planned afterwards) --

def _batch_changes(model, gpu, run):
    from vramplan.solvers import max_micro_batch

    batch = run.micro_batch_size
    if batch <= 1:
        return []
    if not run.trains:
        fitting = max_micro_batch(model, gpu, run, limit=batch - 1)
        new = fitting or 1
        return [_Change(("batch",), f"batch {new} (from {batch})", f"--batch {new}",
                        run.model_copy(update={"micro_batch_size": new}))]
    effective = batch * run.grad_accum_steps

    def change(new: int) -> _Change:
        accum = effective // new
        return _Change(
            ("batch",), f"micro-batch {new} x gradient accumulation {accum} (same effective batch {effective})",
            f"--batch {new} --accum {accum}",
            run.model_copy(update={"micro_batch_size": new, "grad_accum_steps": accum}))

    def fits(new: int) -> bool:
        result = _plan(model, gpu, change(new).run)
        return result is not None and result.fits

    return [change(new) for new in largest_fitting(divisors_below(effective, batch), fits)]


def _seq_changes(model, gpu, run):
    from vramplan.solvers import max_seq_len

    seq = run.seq_len
    if seq <= 1:
        return []
    fitting = nice_seq(max_seq_len(model, gpu, run, limit=seq - 1))
    new = fitting if fitting >= seq_floor(seq) else seq // 2
    what = "prompt" if not run.trains else "training sequences"
    return [_Change(("seq",), f"shorter {what}: {new} tokens (from {seq}; longer samples are truncated)",
                    f"--seq {new}", run.model_copy(update={"seq_len": new}))]


def checkpointing_changes(model, gpu, run):
    if not run.trains or run.gradient_checkpointing:
        return []
    return [_Change(("checkpointing",), "gradient checkpointing (recomputes each layer: ~20-30% slower steps)",
                    "--gradient-checkpointing", run.model_copy(update={"gradient_checkpointing": True}))]


def optimizer_changes(model, gpu, run):
    """Lighter optimizer state, cheapest to the user first (registry order): the entries offered by
    advice whose on-device state ranks below the run's; Adafactor-like entries only for full
    fine-tuning, where the state is of the whole model (for adapters it saves little and changes
    the recipe)."""
    current = get_optimizer(run.optimizer)
    if not run.trains or current.advice_state_rank is None:
        return []
    return [_Change(("optimizer",), f"{entry.description} instead of {run.optimizer}", f"--optimizer {entry.name}",
                    run.model_copy(update={"optimizer": entry.name}))
            for entry in all_optimizers()
            if entry.advice_offer and entry.advice_state_rank < current.advice_state_rank
            and (run.method == "full" or not entry.advice_full_only)]


def _kv_cache_changes(model, gpu, run):
    """An fp8 KV cache: 1 byte per value; only GPUs with fp8 support run it (`resolve_dtypes` refuses others)."""
    if run.trains or not gpu.fp8 or run.kv_cache_dtype == "fp8":
        return []
    current = resolve_dtypes(run, gpu, model).kv_cache
    return [_Change(("kv_cache",), f"fp8 KV cache (1 byte per value instead of {current}'s "
                                   f"{DTYPE_BYTES[current]}; small accuracy cost)",
                    "--kv-cache-dtype fp8", run.model_copy(update={"kv_cache_dtype": "fp8"}))]


def _rank_changes(model, gpu, run):
    from vramplan.solvers import max_lora_rank, power_of_two_floor

    rank = run.lora_rank
    if not run.uses_lora or rank <= 1:
        return []
    new = power_of_two_floor(max_lora_rank(model, gpu, run, limit=rank - 1)) or max(1, rank // 2)
    return [_Change(("rank",), f"LoRA rank {new} (from {rank})", f"--rank {new}",
                    run.model_copy(update={"lora_rank": new}))]


def attention_targets(model: ModelSpec) -> tuple[str, ...]:
    return tuple(lin.name for lin in model.layer_linears() if lin.name in ATTENTION_MODULES)


def _targets_changes(model, gpu, run):
    if not run.uses_lora:
        return []
    names = {lin.name for lin in model.layer_linears(resolve_dtypes(run, gpu, model).moe_experts)}
    current = names if ALL_LINEAR in run.lora_targets else set(run.lora_targets)
    options = [attention_targets(model), tuple(t for t in ("q_proj", "v_proj") if t in names)]
    changes = []
    for targets in options:
        if targets and set(targets) < current:
            changes.append(_Change(("targets",), f"LoRA on {_targets_flag(targets)} only (fewer target modules)",
                                   f"--targets {_targets_flag(targets)}",
                                   run.model_copy(update={"lora_targets": targets})))
    return changes


def chunked_loss_changes(model, gpu, run):
    if not run.trains or run.loss_impl == "chunked":
        return []
    return [_Change(("chunked_loss",),
                    f"chunked cross-entropy (fp32 logits {run.loss_chunks} chunks at a time; vocab {model.vocab_size:,})",
                    "--loss-impl chunked", run.model_copy(update={"loss_impl": "chunked"}))]


def _kbit_prep_changes(model, gpu, run):
    """Without peft's k-bit preparation the float-kept modules stay in the load dtype (half of
    fp32); the price is less numerically robust norms and a checkpointing call of your own."""
    if run.method != "qlora" or not run.kbit_prep:
        return []
    return [_Change(("kbit_prep",),
                    "skip prepare_model_for_kbit_training (embeddings, norms, lm_head stay 16-bit; "
                    "enable gradient checkpointing yourself)",
                    "--no-kbit-prep", run.model_copy(update={"kbit_prep": False}))]


def _moe_experts_changes(model, gpu, run):
    """transformers >= 5 keeps fused 3-D experts out of bitsandbytes' reach; 4.x's per-expert
    nn.Linear layout gets them quantized (the price: pinning transformers 4.x)."""
    if not model.is_moe or run.moe_experts == "linear":
        return []
    return [_Change(("moe_experts",),
                    "transformers 4.x MoE layout (one nn.Linear per expert, which bitsandbytes quantizes; "
                    "transformers >= 5 keeps fused experts unquantized)",
                    "--moe-experts linear", run.model_copy(update={"moe_experts": "linear"}))]


def _full_precision_changes(model, gpu, run):
    """Pure 16-bit full fine-tuning drops the fp32 master weights, gradients and state; it needs
    care (bf16 rounding of small updates), so it is priced with the code changes."""
    if run.method != "full" or run.full_precision == "pure":
        return []
    return [_Change(("full_precision",),
                    "pure 16-bit full fine-tuning (no fp32 master weights; small updates can round away)",
                    "--full-precision pure", run.model_copy(update={"full_precision": "pure"}))]


def method_changes(model, gpu, run):
    lighter = {"full": "lora", "lora": "qlora"}.get(run.method)
    if lighter is None:
        return []
    flags = f"--method {lighter}" + (" --format nf4" if lighter == "qlora" and run.weight_format else "")
    update = {"method": lighter}
    if lighter == "qlora" and run.weight_format:
        update["weight_format"] = "nf4"
    elif run.method == "full":
        update["weight_format"] = None
    text = {"lora": "LoRA instead of full fine-tuning (frozen base, small adapters)",
            "qlora": "QLoRA: a 4-bit NF4 base instead of 16-bit"}[lighter]
    return [_Change(("method",), text, flags, run.model_copy(update=update))]


# A name's family: its leading word and major version, stopping before the size
# ("llama-3.1-8b" -> "llama-3", "qwen2.5-7b" -> "qwen2", "mistral-7b-v0.3" -> "mistral").
_FAMILY = re.compile(r"[a-z]+(?:-?\d+(?![\d.]*[bmkx]))?")


def model_family(model: ModelSpec) -> str:
    """The family a model's name places it in (the part after an HF 'owner/'), '' when none."""
    found = _FAMILY.match(model.name.rsplit("/", 1)[-1].lower())
    return found.group(0) if found else ""


def _model_changes(model, gpu, run):
    """The largest smaller catalog model that fits, from the same family where one does, else any."""
    from vramplan.catalog import list_models
    from vramplan.memory.parameters import parameter_count
    from vramplan.solvers import largest_model

    size = parameter_count(model)
    smaller = [m for m in list_models() if parameter_count(m) < size]
    family = model_family(model)
    kin = [m for m in smaller if family and model_family(m) == family]
    found, what = largest_model(gpu, run, kin), "a smaller model of the same family"
    if found is None:
        found, what = largest_model(gpu, run, [m for m in smaller if m not in kin]), "a smaller model"
    if found is None:
        return []
    return [_Change(("model",), f"{what}: {found.name} ({parameter_count(found) / 1e9:.1f}B parameters)",
                    f"--model {found.name}", run, model=found)]


def _gpu_changes(model, gpu, run):
    from vramplan.gpus import list_gpus
    from vramplan.solvers import smallest_gpu

    found = smallest_gpu(model, run, [g for g in list_gpus() if g.capacity_bytes > gpu.capacity_bytes])
    if found is None:
        return []
    return [_Change(("gpu",), f"a bigger GPU: {found.key} ({found.capacity_bytes / 2**30:.0f} GiB)",
                    f"--gpu {found.key}", run, gpu=found)]


SINGLE_CHANGES = (
    _batch_changes, _seq_changes, checkpointing_changes, optimizer_changes, _kv_cache_changes, _rank_changes,
    _targets_changes, chunked_loss_changes, _kbit_prep_changes, _moe_experts_changes, _full_precision_changes,
    method_changes, _model_changes, _gpu_changes,
)


def _advice(change: _Change, model, gpu, base: Breakdown) -> Advice | None:
    model = change.model or model
    gpu = change.gpu or gpu
    result = _plan(model, gpu, change.run)
    if result is None:
        return None
    return Advice(change=change.change, flags=change.flags, run=change.run, model=model, gpu=gpu,
                  breakdown=result, saved_bytes=base.peak_allocated_bytes - result.peak_allocated_bytes,
                  fits=result.fits, kinds=change.kinds, cost=sum(COSTS[k] for k in change.kinds))


def _best_of_kind(candidates: list[Advice]) -> list[Advice]:
    """Per kind of change, the first candidate that fits, else the one that saves the most.
    Optimizers are different algorithms, not strengths of one change: every one that fits (else
    every one that helps) is kept; of the target sets, every one that helps when none fits."""
    chosen = []
    for kind, group in itertools.groupby(candidates, key=lambda a: a.kinds):
        group = list(group)
        fitting = [a for a in group if a.fits]
        if fitting:
            chosen.extend(fitting if kind == ("optimizer",) else fitting[:1])
        elif kind == ("optimizer",) or kind == ("targets",):
            chosen.extend(a for a in group if a.saved_bytes > 0)
        else:
            best = max(group, key=lambda a: a.saved_bytes)
            if best.saved_bytes > 0:
                chosen.append(best)
    return chosen


# -- combinations of the cheap changes, each at full strength --

# The cheap changes a combination applies whole; optimizer and targets take their first option.
_DISCRETE = {
    "checkpointing": checkpointing_changes, "optimizer": optimizer_changes, "kv_cache": _kv_cache_changes,
    "targets": _targets_changes, "chunked_loss": chunked_loss_changes, "kbit_prep": _kbit_prep_changes,
    "moe_experts": _moe_experts_changes, "full_precision": _full_precision_changes,
}


def _strongest(kind: str, model, gpu, run) -> tuple[RunConfig, str, str] | None:
    """Run with one cheap change applied at full strength, its text and flags (None: not applicable)."""
    if kind == "batch":
        if run.micro_batch_size <= 1:
            return None
        if not run.trains:
            return run.model_copy(update={"micro_batch_size": 1}), "batch 1", "--batch 1"
        effective = run.micro_batch_size * run.grad_accum_steps
        return (run.model_copy(update={"micro_batch_size": 1, "grad_accum_steps": effective}),
                f"micro-batch 1 x accumulation {effective}", f"--batch 1 --accum {effective}")
    changes = _DISCRETE[kind](model, gpu, run) if kind in _DISCRETE else []
    if not changes:
        return None
    return changes[0].run, changes[0].change.split(" (")[0], changes[0].flags


def _solved(kind: str, model, gpu, run) -> tuple[RunConfig, str, str] | None:
    """Seq or rank lowered to the largest value that fits with the other changes applied."""
    from vramplan.solvers import max_lora_rank, max_seq_len, power_of_two_floor

    try:
        if kind == "rank":
            if not run.uses_lora or run.lora_rank <= 1:
                return None
            # Solved when it alone closes the gap, else a 4x cut so a shorter sequence can close it.
            new = power_of_two_floor(max_lora_rank(model, gpu, run, limit=run.lora_rank - 1))
            new = new or max(1, run.lora_rank // 4)
            return run.model_copy(update={"lora_rank": new}), f"LoRA rank {new}", f"--rank {new}"
        if run.seq_len <= MIN_SEQ:
            return None
        new = nice_seq(max_seq_len(model, gpu, run, limit=run.seq_len - 1))
        if new < seq_floor(run.seq_len):
            return None
        return run.model_copy(update={"seq_len": new}), f"seq {new}", f"--seq {new}"
    except InputError:
        return None


def _lowers_peak(kind: str, model, gpu, run, base: Breakdown) -> bool:
    step = _strongest(kind, model, gpu, run)
    result = step and _plan(model, gpu, step[0])
    return bool(result) and result.peak_allocated_bytes < base.peak_allocated_bytes


def _combined(subset, discrete, model, gpu, run, base) -> Advice | None:
    """`subset` of cheap kinds applied together (discrete ones whole, then rank and seq solved)."""
    changed, texts, flags = run, [], []
    for kind in [k for k in subset if k in discrete] + [k for k in ("rank", "seq") if k in subset]:
        step = (_strongest if kind in discrete else _solved)(kind, model, gpu, changed)
        if step is None:
            return None
        changed = step[0]
        texts.append(step[1])
        flags.append(step[2])
    return _advice(_Change(tuple(sorted(subset, key=COSTS.get)), " + ".join(texts), " ".join(flags), changed),
                   model, gpu, base)


def cheapest_combination(model: ModelSpec, gpu: GPUSpec, run: RunConfig, base: Breakdown) -> Advice | None:
    """The cheapest set of two or more cheap changes that makes the run fit, or None."""
    applicable = [k for k in CHEAP_KINDS if k not in ("seq", "rank") and _strongest(k, model, gpu, run) is not None]
    helping = [k for k in applicable if _lowers_peak(k, model, gpu, run, base)]
    # A change can cost bytes alone and save them beside others (MoE per-expert linears add expert
    # LoRA activations but quantize the experts): it takes part if it lowers the helpers' peak.
    together = _combined(helping, helping, model, gpu, run, base) if helping else None
    after = (together.run, together.breakdown) if together else (run, base)
    discrete = [k for k in applicable if k in helping or _lowers_peak(k, model, gpu, *after)]
    solvable = [k for k in ("seq", "rank") if k == "seq" and run.seq_len > MIN_SEQ or k == "rank" and run.uses_lora]
    kinds = tuple(discrete + solvable)
    if len(kinds) < 2:
        return None
    # Savings are taken not to cancel: when all of these changes together do not fit, no subset
    # is tried (that spares up to 2**9 plans).
    everything = _combined(kinds, discrete, model, gpu, run, base)
    if everything is None or not everything.fits:
        return None
    subsets = [s for n in range(2, len(kinds)) for s in itertools.combinations(kinds, n)]
    for subset in sorted(subsets, key=lambda s: sum(COSTS[k] for k in s)):
        advice = _combined(subset, discrete, model, gpu, run, base)
        if advice is not None and advice.fits:
            return advice
    return everything


def _tier(advice: Advice) -> int:
    return max(TIER_OF[kind] for kind in advice.kinds)


def _shown(chosen: list[Advice], limit: int) -> list[Advice]:
    """What `advise` lists: every change that fits alone, and each tier's biggest saver, even past
    `limit`; the rest of `limit` filled with the biggest savers. Fitting ones first, cheapest
    first; then the others tier by tier, biggest saving first."""
    keep = {id(a): a for a in chosen if a.fits}
    for tier in range(len(TIERS)):
        in_tier = [a for a in chosen if _tier(a) == tier]
        if in_tier:
            best = max(in_tier, key=lambda a: a.saved_bytes)
            keep.setdefault(id(best), best)
    for advice in sorted(chosen, key=lambda a: -a.saved_bytes):
        if len(keep) >= limit:
            break
        keep.setdefault(id(advice), advice)
    unique = keep.values()
    fitting = sorted((a for a in unique if a.fits), key=lambda a: a.cost)
    return fitting + sorted((a for a in unique if not a.fits), key=lambda a: (_tier(a), -a.saved_bytes))


def advise(model: ModelSpec, gpu: GPUSpec, run: RunConfig, limit: int = 8) -> list[Advice]:
    """Ranked changes for a run that does not fit; "room to spare" hints for one that does.

    `limit` caps the list, except that a change that alone makes the run fit, and the change
    that saves the most in each tier, are never cut.
    """
    base = _plan(model, gpu, run)
    if base is None:  # the run itself is invalid: let plan raise the InputError
        from vramplan.estimate import plan

        plan(model, gpu, run)
    if base.fits:
        return spare_room(model, gpu, run, base)[:limit]
    candidates = []
    for make in SINGLE_CHANGES:
        for change in make(model, gpu, run):
            advice = _advice(change, model, gpu, base)
            if advice is not None:
                candidates.append(advice)
    chosen = _best_of_kind(candidates)
    if not any(a.fits and set(a.kinds) <= set(CHEAP_KINDS) for a in chosen):
        combination = cheapest_combination(model, gpu, run, base)
        if combination is not None:
            chosen.append(combination)
    unique = {}
    for advice in chosen:
        unique.setdefault((advice.model.name, advice.gpu.key, advice.run), advice)
    return _shown(list(unique.values()), limit)


def spare_room(model: ModelSpec, gpu: GPUSpec, run: RunConfig, base: Breakdown | None = None) -> list[Advice]:
    """For a run that fits: how far batch, sequence and rank can grow, and checkpointing off if it fits."""
    from vramplan.solvers import describe_rounded, max_lora_rank, max_micro_batch, max_seq_len, power_of_two_floor

    base = base or _plan(model, gpu, run)
    hints = []
    batch = max_micro_batch(model, gpu, run)
    if batch > run.micro_batch_size:
        hints.append(_Change(("batch",), f"micro-batch up to {batch} fits (from {run.micro_batch_size})",
                             f"--batch {batch}", run.model_copy(update={"micro_batch_size": batch})))
    exact_seq = max_seq_len(model, gpu, run)
    seq = min(exact_seq, max(run.seq_len, model.max_position_embeddings))
    if seq > run.seq_len:
        shown = describe_rounded(seq, exact_seq, "the model's context window", " tokens")
        hints.append(_Change(("seq",), f"sequences up to {shown} fit (from {run.seq_len})",
                             f"--seq {seq}", run.model_copy(update={"seq_len": seq})))
    if run.uses_lora:
        exact_rank = max_lora_rank(model, gpu, run)
        rank = power_of_two_floor(exact_rank)
        if rank > run.lora_rank:
            shown = describe_rounded(rank, exact_rank, "power of two")
            hints.append(_Change(("rank",), f"LoRA rank up to {shown} fits (from {run.lora_rank})",
                                 f"--rank {rank}", run.model_copy(update={"lora_rank": rank})))
    if run.trains and run.gradient_checkpointing:
        hints.append(_Change(("checkpointing",), "gradient checkpointing off still fits (faster steps)",
                             "--no-gradient-checkpointing", run.model_copy(update={"gradient_checkpointing": False})))
    advice = [a for a in (_advice(h, model, gpu, base) for h in hints) if a is not None]
    return [a for a in advice if a.fits]


def render_advice(advice: list[Advice], fits: bool) -> str:
    """Plain-text lines for the CLI: one suggestion per line with its effect and flags."""
    if not advice:
        return "" if fits else "no change found that makes it fit on this GPU"
    lines = ["room to spare:" if fits else "to make it fit:"]
    for item in advice:
        gib = item.breakdown.headroom_bytes / 2**30
        if fits:
            effect = f"headroom {gib:.2f} GiB"
        elif "gpu" in item.kinds:
            effect = (f"needs {item.breakdown.required_bytes / 2**30:.2f} of "
                      f"{item.breakdown.capacity_bytes / 2**30:.2f} GiB -> FITS, headroom {gib:.2f} GiB")
        else:
            verdict = "FITS" if item.fits else "still does not fit"
            saved = f"saves {item.saved_bytes / 2**30:.2f} GiB" if item.saved_bytes >= 0 else \
                f"uses {-item.saved_bytes / 2**30:.2f} GiB more"
            effect = f"{saved} -> {verdict}, headroom {gib:.2f} GiB"
        lines.append(f"  - {item.change}: {effect}  [{item.flags}]")
    return "\n".join(lines)


def render_fit_advice(model: ModelSpec, gpu: GPUSpec, run: RunConfig, fits: bool, *, margin_bytes: int = 0) -> str:
    """What `fit` prints under one GPU's table: `render_advice`, then, when the run does not fit, the
    multi-GPU step (`vramplan.distributed.advice.shard_step`: FSDP on the fewest GPUs, and its flags)."""
    text = render_advice(advise(model, gpu, run), fits)
    if fits:
        return text
    from vramplan.distributed.advice import render_shard_step, shard_step

    return "\n".join(part for part in (text, render_shard_step(shard_step(model, gpu, run, margin_bytes=margin_bytes)))
                     if part)


__all__ = ["Advice", "COSTS", "advise", "spare_room", "cheapest_combination", "render_advice", "render_fit_advice",
           "attention_targets"]
