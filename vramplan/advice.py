"""What to change when a run does not fit, and what room is left when it does.

Every suggestion is the memory model re-run on the changed config (`plan`), never a table
of savings. Changes are tried in the order users pay the least for (`COSTS`): a smaller
micro-batch with more gradient accumulation (same effective batch), shorter sequences,
gradient checkpointing, an 8-bit or paged optimizer, a lower LoRA rank or fewer target
modules, chunked cross-entropy, a lighter method, a smaller model, a bigger GPU. When no
single cheap change is enough, the cheapest combination of them that fits is offered too:
combinations are tried in order of total cost, so the first that fits is the cheapest.

`advise` lists changes that fit first (cheapest first), then those that help but are not
enough alone. For a run that already fits it lists "room to spare" instead: the largest
micro-batch, sequence and rank that still fit, and checkpointing off when that fits.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from vramplan.errors import InputError
from vramplan.memory.lora import ATTENTION_MODULES
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.run import ALL_LINEAR

# Relative cost to the user of each kind of change (lower is cheaper). Distinct powers of two,
# so a combination's total orders combinations by their most expensive change first.
COSTS = {
    "batch": 1, "seq": 2, "checkpointing": 4, "optimizer": 8, "rank": 16, "targets": 32,
    "chunked_loss": 64, "kbit_prep": 128, "method": 256, "model": 512, "gpu": 1024,
}
CHEAP_KINDS = ("batch", "seq", "checkpointing", "optimizer", "rank", "targets", "chunked_loss", "kbit_prep")
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


def _nice_seq(seq_len: int) -> int:
    return seq_len - seq_len % SEQ_STEP if seq_len >= SEQ_STEP else seq_len


def _seq_floor(seq_len: int) -> int:
    """The shortest sequence worth suggesting: cutting more than 4x changes the task, not the budget."""
    return max(min(MIN_SEQ, seq_len - 1), seq_len // 4)


def _power_of_two_floor(value: int) -> int:
    return 1 << (value.bit_length() - 1) if value >= 1 else 0


def _divisors_below(total: int, below: int) -> list[int]:
    return [d for d in range(min(total, below - 1), 0, -1) if total % d == 0]


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
    changes = []
    for new in _divisors_below(effective, batch):
        accum = effective // new
        changes.append(_Change(
            ("batch",), f"micro-batch {new} x gradient accumulation {accum} (same effective batch {effective})",
            f"--batch {new} --accum {accum}",
            run.model_copy(update={"micro_batch_size": new, "grad_accum_steps": accum})))
    return changes


def _seq_changes(model, gpu, run):
    from vramplan.solvers import max_seq_len

    seq = run.seq_len
    if seq <= 1:
        return []
    fitting = _nice_seq(max_seq_len(model, gpu, run, limit=seq - 1))
    new = fitting if fitting >= _seq_floor(seq) else seq // 2
    what = "prompt" if not run.trains else "training sequences"
    return [_Change(("seq",), f"shorter {what}: {new} tokens (from {seq}; longer samples are truncated)",
                    f"--seq {new}", run.model_copy(update={"seq_len": new}))]


def _checkpointing_changes(model, gpu, run):
    if not run.trains or run.gradient_checkpointing:
        return []
    return [_Change(("checkpointing",), "gradient checkpointing (recomputes each layer: ~20-30% slower steps)",
                    "--gradient-checkpointing", run.model_copy(update={"gradient_checkpointing": True}))]


_OPTIMIZER_TEXT = {
    "adamw_8bit": "8-bit AdamW (bitsandbytes)",
    "paged_adamw_8bit": "paged 8-bit AdamW (state in CUDA managed memory, outside the allocator)",
}


def _optimizer_changes(model, gpu, run):
    if not run.trains or run.optimizer not in ("adamw", "adamw_fused", "paged_adamw", "adamw_8bit"):
        return []
    options = ["adamw_8bit", "paged_adamw_8bit"] if run.optimizer != "paged_adamw" else ["paged_adamw_8bit"]
    return [_Change(("optimizer",), f"{_OPTIMIZER_TEXT[name]} instead of {run.optimizer}", f"--optimizer {name}",
                    run.model_copy(update={"optimizer": name}))
            for name in options if name != run.optimizer]


def _rank_changes(model, gpu, run):
    from vramplan.solvers import max_lora_rank

    rank = run.lora_rank
    if not run.uses_lora or rank <= 1:
        return []
    new = _power_of_two_floor(max_lora_rank(model, gpu, run, limit=rank - 1)) or max(1, rank // 2)
    return [_Change(("rank",), f"LoRA rank {new} (from {rank})", f"--rank {new}",
                    run.model_copy(update={"lora_rank": new}))]


def attention_targets(model: ModelSpec) -> tuple[str, ...]:
    return tuple(lin.name for lin in model.layer_linears() if lin.name in ATTENTION_MODULES)


def _targets_changes(model, gpu, run):
    if not run.uses_lora:
        return []
    from vramplan.memory.dtypes import resolve_dtypes

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


def _chunked_loss_changes(model, gpu, run):
    if not run.trains or run.loss_impl == "chunked":
        return []
    return [_Change(("chunked_loss",),
                    f"chunked cross-entropy (fp32 logits {run.loss_chunks} chunks at a time; vocab {model.vocab_size})",
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


def _method_changes(model, gpu, run):
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


def _model_changes(model, gpu, run):
    from vramplan.catalog import list_models
    from vramplan.memory.parameters import parameter_count
    from vramplan.solvers import largest_model

    size = parameter_count(model)
    smaller = [m for m in list_models() if parameter_count(m) < size]
    found = largest_model(gpu, run, smaller)
    if found is None:
        return []
    return [_Change(("model",), f"a smaller model: {found.name} ({parameter_count(found) / 1e9:.1f}B parameters)",
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
    _batch_changes, _seq_changes, _checkpointing_changes, _optimizer_changes, _rank_changes,
    _targets_changes, _chunked_loss_changes, _kbit_prep_changes, _method_changes, _model_changes, _gpu_changes,
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
    """Per kind of change, the first candidate that fits, else the one that saves the most."""
    chosen = []
    for kind, group in itertools.groupby(candidates, key=lambda a: a.kinds):
        group = list(group)
        fitting = [a for a in group if a.fits]
        if fitting:
            chosen.append(fitting[0])
        elif kind == ("optimizer",) or kind == ("targets",):
            chosen.extend(a for a in group if a.saved_bytes > 0)
        else:
            best = max(group, key=lambda a: a.saved_bytes)
            if best.saved_bytes > 0:
                chosen.append(best)
    return chosen


# -- combinations of the cheap changes, each at full strength --

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
    if kind == "checkpointing":
        changes = _checkpointing_changes(model, gpu, run)
    elif kind == "optimizer":
        changes = _optimizer_changes(model, gpu, run)[:1]
    elif kind == "targets":
        changes = _targets_changes(model, gpu, run)[:1]
    elif kind == "chunked_loss":
        changes = _chunked_loss_changes(model, gpu, run)
    elif kind == "kbit_prep":
        changes = _kbit_prep_changes(model, gpu, run)
    else:
        return None
    if not changes:
        return None
    return changes[0].run, changes[0].change.split(" (")[0], changes[0].flags


def _solved(kind: str, model, gpu, run) -> tuple[RunConfig, str, str] | None:
    """Seq or rank lowered to the largest value that fits with the other changes applied."""
    from vramplan.solvers import max_lora_rank, max_seq_len

    try:
        if kind == "rank":
            if not run.uses_lora or run.lora_rank <= 1:
                return None
            # Solved when it alone closes the gap, else a 4x cut so a shorter sequence can close it.
            new = _power_of_two_floor(max_lora_rank(model, gpu, run, limit=run.lora_rank - 1))
            new = new or max(1, run.lora_rank // 4)
            return run.model_copy(update={"lora_rank": new}), f"LoRA rank {new}", f"--rank {new}"
        if run.seq_len <= MIN_SEQ:
            return None
        new = _nice_seq(max_seq_len(model, gpu, run, limit=run.seq_len - 1))
        if new < _seq_floor(run.seq_len):
            return None
        return run.model_copy(update={"seq_len": new}), f"seq {new}", f"--seq {new}"
    except InputError:
        return None


def cheapest_combination(model: ModelSpec, gpu: GPUSpec, run: RunConfig, base: Breakdown) -> Advice | None:
    """The cheapest set of two or more cheap changes that makes the run fit, or None."""
    discrete = [k for k in ("batch", "checkpointing", "optimizer", "targets", "chunked_loss", "kbit_prep")
                if _strongest(k, model, gpu, run) is not None]
    solvable = [k for k in ("seq", "rank") if k == "seq" and run.seq_len > MIN_SEQ or k == "rank" and run.uses_lora]
    kinds = discrete + solvable
    subsets = [s for n in range(2, len(kinds) + 1) for s in itertools.combinations(kinds, n)]
    for subset in sorted(subsets, key=lambda s: sum(COSTS[k] for k in s)):
        changed, texts, flags = run, [], []
        for kind in [k for k in subset if k in discrete] + [k for k in ("rank", "seq") if k in subset]:
            step = (_strongest if kind in discrete else _solved)(kind, model, gpu, changed)
            if step is None:
                break
            changed = step[0]
            texts.append(step[1])
            flags.append(step[2])
        else:
            advice = _advice(_Change(tuple(sorted(subset, key=COSTS.get)), " + ".join(texts), " ".join(flags),
                                     changed), model, gpu, base)
            if advice is not None and advice.fits:
                return advice
    return None


def advise(model: ModelSpec, gpu: GPUSpec, run: RunConfig, limit: int = 8) -> list[Advice]:
    """Ranked changes for a run that does not fit; "room to spare" hints for one that does."""
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
    ordered = sorted(unique.values(), key=lambda a: (not a.fits, a.cost))
    return ordered[:limit]


def spare_room(model: ModelSpec, gpu: GPUSpec, run: RunConfig, base: Breakdown | None = None) -> list[Advice]:
    """For a run that fits: how far batch, sequence and rank can grow, and checkpointing off if it fits."""
    from vramplan.solvers import describe_rounded, max_lora_rank, max_micro_batch, max_seq_len

    base = base or _plan(model, gpu, run)
    hints = []
    batch = max_micro_batch(model, gpu, run)
    if batch > run.micro_batch_size:
        hints.append(_Change(("batch",), f"micro-batch up to {batch} fits (from {run.micro_batch_size})",
                             f"--batch {batch}", run.model_copy(update={"micro_batch_size": batch})))
    exact_seq = max_seq_len(model, gpu, run)
    seq = min(exact_seq, max(run.seq_len, model.max_position_embeddings))
    if seq > run.seq_len:
        shown = describe_rounded(seq, exact_seq, "the model's context window")
        hints.append(_Change(("seq",), f"sequences up to {shown} tokens fit (from {run.seq_len})",
                             f"--seq {seq}", run.model_copy(update={"seq_len": seq})))
    if run.uses_lora:
        exact_rank = max_lora_rank(model, gpu, run)
        rank = _power_of_two_floor(exact_rank)
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


__all__ = ["Advice", "COSTS", "advise", "spare_room", "cheapest_combination", "render_advice", "attention_targets"]
