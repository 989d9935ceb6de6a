"""The validation matrix as data, and the planner's prediction for each exact case.

`matrix.toml` has a `[defaults]` table and one `[[case]]` table per configuration. A case
names a catalog model, optionally `layers` (an int, or a list: one run per layer count, the
honest way to check a 7-9B model's per-layer and fixed terms on one GPU), a GPU profile, an
optional `memory_cap_mib` (a fixed number of bytes the caching allocator may reserve, the same
on any card, enforced with `torch.cuda.set_per_process_memory_fraction(cap / total_memory)`: a
cheap test of the "does not fit" verdict), and any RunConfig field. No torch here: the matrix
test and the report run without it.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vramplan.components import all_components
from vramplan.errors import InputError, from_validation_error
from vramplan.phases import ANALYTIC_PHASES_OF_MEASURED
from vramplan.specs import GPUSpec, ModelSpec, RunConfig

MATRIX_PATH = Path(__file__).resolve().parent / "matrix.toml"
CASE_KEYS = {"id", "model", "layers", "gpu", "memory_cap_mib", "warmup_steps", "measured_steps", "note"}
MIB = 2**20
# Bounds on an untrusted matrix file: the bundled one is 9 KB and 4 levels deep (file, case
# array, case table, layers list); steps and caps far above any run the harness is meant for.
MATRIX_MAX_BYTES = 1 << 20
MATRIX_MAX_DEPTH = 8
CASE_BOUNDS = {"layers": 1 << 12, "memory_cap_mib": 1 << 24, "warmup_steps": 1000, "measured_steps": 1000}
# A capped case must leave the planner no doubt: required at most 0.9x or at least 1.1x capacity.
CAP_MARGIN = 0.10
# Measured phase -> the planner phases it spans (the one mapping, vramplan/phases.py).
PLANNER_PHASES = ANALYTIC_PHASES_OF_MEASURED
# What is allocated once the model is built and prepared, before any step.
LOAD_COMPONENTS = tuple(entry.name for entry in all_components() if entry.at_load)

# The CPU smoke model: llama-shaped, tiny, so every path runs in seconds without a GPU.
SMOKE_MODEL = ModelSpec(
    name="tiny-llama-smoke", architecture="llama", hidden_size=64, intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
    max_position_embeddings=512, source="validation smoke",
)


@dataclass(frozen=True)
class Case:
    """One run of the harness: a model (with an optional layer override) and a RunConfig."""

    case_id: str
    model: str
    run: RunConfig
    layers: int | None = None
    gpu: str = "h100-sxm"
    memory_cap_bytes: int | None = None
    warmup_steps: int = 2
    measured_steps: int = 2
    note: str = ""
    spec: ModelSpec | None = field(default=None, compare=False)

    def model_spec(self) -> ModelSpec:
        """The architecture the planner sees: the catalog model with `layers` applied."""
        from vramplan.resolve import resolve_model

        spec = self.spec or resolve_model(self.model)
        if self.layers is not None:
            spec = spec.model_copy(update={"num_hidden_layers": self.layers})
        return spec

    def config_dict(self) -> dict:
        """Everything that defines the run, for the results' JSON column."""
        return {
            "case_id": self.case_id, "model": self.model, "layers": self.layers, "gpu": self.gpu,
            "memory_cap_bytes": self.memory_cap_bytes, "warmup_steps": self.warmup_steps,
            "measured_steps": self.measured_steps, "run": self.run.model_dump(mode="json"),
        }


def _make_run(fields: dict, where: str) -> RunConfig:
    try:
        return RunConfig(**fields)
    except Exception as exc:  # pydantic.ValidationError
        raise from_validation_error(exc, prefix=f"{where}: ") from None


def _positive_int(value, where: str, key: str) -> int:
    high = CASE_BOUNDS[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= high:
        shown = repr(value) if isinstance(value, (int, float, str)) and len(repr(value)) <= 40 else type(value).__name__
        raise InputError(f"{where}: {key}", f"must be an integer from 1 to {high} (got {shown})")
    return value


def _depth(value) -> int:
    """How deeply `value` nests lists and tables, counted without recursion (a hostile file may
    nest thousands of levels)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MATRIX_MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_matrix(path: Path) -> dict:
    """The TOML of `path` as a dict, or an InputError saying in one line why it is not a matrix:
    not a readable regular file, over MATRIX_MAX_BYTES, not UTF-8, not TOML, nested too deep."""
    try:
        if not path.is_file():
            raise InputError("--matrix", f"no such file: {path}" if not path.exists() else f"not a regular file: {path}")
        if path.stat().st_size > MATRIX_MAX_BYTES:
            raise InputError(str(path), f"is {path.stat().st_size} bytes; a matrix file is at most {MATRIX_MAX_BYTES}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError("--matrix", f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"is not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise InputError(str(path), f"not valid TOML: nested more than {MATRIX_MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # TOMLDecodeError, and int() past 4300 digits
        raise InputError(str(path), f"not valid TOML: {str(exc).splitlines()[0][:200]}") from None
    if _depth(data) > MATRIX_MAX_DEPTH:
        raise InputError(str(path), f"nested more than {MATRIX_MAX_DEPTH} levels deep (a matrix needs 4)")
    unknown = sorted(set(data) - {"defaults", "case"})
    if unknown:
        raise InputError(f"{path.name}: {unknown[0][:40]}", "is not a matrix key (defaults, case)")
    if not isinstance(data.get("defaults", {}), dict):
        raise InputError(f"{path.name}: defaults", "must be a table ([defaults])")
    cases = data.get("case", [])
    if not isinstance(cases, list) or not all(isinstance(table, dict) for table in cases):
        raise InputError(f"{path.name}: case", "must be an array of tables ([[case]])")
    return data


def cases_from_table(table: dict, defaults: dict, where: str) -> list[Case]:
    """The Case(s) one `[[case]]` table describes: one per entry of `layers` when it is a list."""
    merged = {**defaults, **table}
    for key in ("id", "model", "gpu"):
        value = merged.get(key, "h100-sxm" if key == "gpu" else None)
        if not isinstance(value, str) or not value:
            raise InputError(f"{where}: {key}", "must be a non-empty string" if key in merged else
                             "is required (a non-empty string)")
    run_fields = {k: v for k, v in merged.items() if k not in CASE_KEYS}
    unknown = sorted(set(run_fields) - set(RunConfig.model_fields))
    if unknown:
        raise InputError(f"{where}: {unknown[0][:40]}",
                         f"is not a case key ({', '.join(sorted(CASE_KEYS))}) nor a RunConfig field")
    run = _make_run(run_fields, f"{where} ({merged['id']})")
    cap_mib = merged.get("memory_cap_mib")
    if cap_mib is not None:
        _positive_int(cap_mib, where, "memory_cap_mib")
    layers = merged.get("layers")
    layer_list = layers if isinstance(layers, list) else [layers]
    common = dict(
        model=merged["model"], run=run, gpu=merged.get("gpu", "h100-sxm"),
        memory_cap_bytes=None if cap_mib is None else cap_mib * MIB,
        warmup_steps=_positive_int(merged.get("warmup_steps", 2), where, "warmup_steps"),
        measured_steps=_positive_int(merged.get("measured_steps", 2), where, "measured_steps"),
        note=str(merged.get("note", "")),
    )
    cases = []
    for count in layer_list:
        if count is not None:
            _positive_int(count, where, "layers")
        suffix = f"-L{count}" if isinstance(layers, list) else ""
        cases.append(Case(case_id=merged["id"] + suffix, layers=count, **common))
    return cases


def load_matrix(path: str | Path = MATRIX_PATH) -> list[Case]:
    """Every case of a matrix file, layer lists expanded, ids checked unique."""
    path = Path(path)
    data = _parse_matrix(path)
    defaults = data.get("defaults", {})
    cases: list[Case] = []
    for number, table in enumerate(data.get("case", []), start=1):
        cases.extend(cases_from_table(table, defaults, f"{path.name} case {number}"))
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise InputError(str(path), f"case id {case.case_id!r} appears twice")
        seen.add(case.case_id)
    return cases


def matches(case: Case, term: str) -> bool:
    """`--only` terms: `key=value` on a case or run field (method=qlora, layers=4), else a
    substring of the case id."""
    if "=" in term:
        key, _, value = term.partition("=")
        key = key.strip()
        if key in ("id", "case_id"):
            actual = case.case_id
        elif key in ("model", "gpu", "layers", "memory_cap_bytes"):
            actual = getattr(case, key)
        elif key in RunConfig.model_fields:
            actual = getattr(case.run, key)
        else:
            raise InputError("--only", f"unknown key {key!r}; use a case key (model, layers, gpu) or a RunConfig field")
        return str(actual).lower() == value.strip().lower()
    return term.lower() in case.case_id.lower()


def select(cases: list[Case], only: list[str] | None) -> list[Case]:
    """Cases matching every `only` term (all of them when `only` is empty)."""
    terms = [t for t in (only or []) if t.strip()]
    return [case for case in cases if all(matches(case, term) for term in terms)]


def smoke_cases() -> list[Case]:
    """Tiny CPU cases, one per harness path: QLoRA (our NF4 + LoRA), LoRA, full, inference."""
    common = dict(micro_batch_size=2, seq_len=32, compute_dtype="bf16")
    runs = {
        "smoke-qlora": dict(method="qlora", lora_rank=8, gradient_checkpointing=True, **common),
        "smoke-qlora-eager": dict(method="qlora", lora_rank=4, gradient_checkpointing=False,
                                  attention="eager", lora_targets=("q_proj", "v_proj"), **common),
        "smoke-lora": dict(method="lora", lora_rank=8, gradient_checkpointing=True, **common),
        "smoke-full": dict(method="full", gradient_checkpointing=False, **common),
        "smoke-inference": dict(method="inference", max_new_tokens=4, **common),
        "smoke-inference-nf4": dict(method="inference", weight_format="nf4", max_new_tokens=4, **common),
    }
    return [Case(case_id=name, model=SMOKE_MODEL.name, run=RunConfig(**fields), spec=SMOKE_MODEL,
                 warmup_steps=1, measured_steps=1) for name, fields in runs.items()]


@dataclass(frozen=True)
class Prediction:
    """The planner's numbers for one case on one (possibly capped) GPU."""

    phase_bytes: dict[str, int]  # measured phase name -> predicted bytes (absent phases omitted)
    peak_bytes: int
    peak_phase: str
    required_bytes: int
    capacity_bytes: int
    fits: bool

    @property
    def required_over_capacity(self) -> float:
        """How far the verdict is from the edge: required / capacity (1.0 is the edge)."""
        return self.required_bytes / self.capacity_bytes


def planner_gpu(case: Case, device_total_bytes: int | None = None) -> GPUSpec:
    """The GPU the prediction is for: the case's profile, with the real device's total memory
    when known; under a memory cap, room for exactly the cap plus the CUDA context (the cap
    limits the caching allocator; the context lies outside it), whatever the card."""
    from vramplan.gpus import get_gpu

    gpu = get_gpu(case.gpu)
    total = device_total_bytes or gpu.total_memory_bytes
    if case.memory_cap_bytes is not None:
        total = case.memory_cap_bytes + gpu.cuda_context_bytes
    return gpu.model_copy(update={"total_memory_bytes": total, "usable_fraction": 1.0})


def memory_fraction(cap_bytes: int, device_total_bytes: int) -> float:
    """The `torch.cuda.set_per_process_memory_fraction` argument that lets the caching allocator
    reserve at most `cap_bytes` on a card of `device_total_bytes` (torch caps reserved memory at
    fraction x total_memory, c10/cuda/CUDACachingAllocator.cpp `setMemoryFraction`)."""
    if not 0 < cap_bytes <= device_total_bytes:
        raise InputError("memory_cap_mib", f"{cap_bytes / MIB:.0f} MiB does not fit this card's "
                                           f"{device_total_bytes / MIB:.0f} MiB")
    return cap_bytes / device_total_bytes


def run_order(cases: list[Case]) -> list[Case]:
    """The order that keeps the most information if a run is cut short: first one case per
    (architecture, method), then every capped case (the verdict check), then the variants;
    matrix order within each tier."""
    first: dict[tuple[str, str], Case] = {}
    for case in cases:
        key = (case.model_spec().architecture, case.run.method)
        if case.memory_cap_bytes is None and key not in first:
            first[key] = case
    leading = list(first.values())
    capped = [case for case in cases if case.memory_cap_bytes is not None]
    chosen = {id(case) for case in (*leading, *capped)}
    return leading + capped + [case for case in cases if id(case) not in chosen]


def predict(case: Case, gpu: GPUSpec | None = None) -> Prediction:
    """Predicted bytes per measured phase, peak and verdict, for the exact case."""
    from vramplan.estimate import plan
    from vramplan.memory.plan import phase_components, phase_totals

    gpu = gpu or planner_gpu(case)
    model = case.model_spec()
    breakdown = plan(model, gpu, case.run)
    phases = phase_components(model, gpu, case.run)
    totals = {name: int(total) for name, total in phase_totals(phases).items()}
    first = next(iter(phases.values()))
    predicted = {"load": int(sum(int(first.get(name, 0)) for name in LOAD_COMPONENTS))}
    for measured, planner_phases in PLANNER_PHASES.items():
        present = [totals[p] for p in planner_phases if p in totals]
        if present:
            predicted[measured] = max(present)
    return Prediction(
        phase_bytes=predicted, peak_bytes=breakdown.peak_allocated_bytes, peak_phase=breakdown.peak_phase,
        required_bytes=breakdown.required_bytes, capacity_bytes=breakdown.capacity_bytes, fits=breakdown.fits,
    )
