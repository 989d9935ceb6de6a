"""The corpus of published memory measurements (validation/published/*.toml) against the planner.

Each file is one public source: a `[source]` table (id, citation, url, date, kind), an optional
`[defaults]` table whose keys every entry inherits (an entry's own `run` keys are merged over the
defaults' `run`), and `[[entry]]` tables. An entry names the run as the source states it (RunConfig
field names in `run`, what the source left out in `unstated`, what we assumed instead in
`assumed`), the stack as stated, the hardware, what was measured and the value in the source's own
unit, with the line it comes from in `quote`. The files are parsed by tomllib after a bounded read
and checked key by key; nothing in them is executed.

What each measurement is compared with (the planner's matching quantity):
- allocated, active: the allocated peak (`max_memory_allocated`; torchtune's "active" peak is the
  allocated peak less freed-but-cached blocks, the same number for a training step);
- reserved: allocated peak + allocator reserve; nvidia_smi: the device total (reserve + CUDA context);
- allocated_init: what stays allocated after loading (quantized weights, quant state, float
  weights, LoRA adapters);
- max_context: `vramplan.solvers.max_seq_len` (0 = the source reports OOM at every length);
- oom: the verdict; unstated: the device total, shown but left out of the error statistics.

Each entry is planned under its stack (`stack_run_fields`): `recipe` names the framework's vramplan
recipe (RunConfig.recipe; "none" where vramplan has none, with `recipe_note` saying why), `versions`
the library versions the source states, and `uses` the libraries its stack runs; the versions not
stated are the releases current on the source's date (validation/published_stack.py). With
`default_stack=True` every entry is planned with the planner's current releases and no recipe, as
before the stacks were connected.

Multi-GPU entries (validation/published/multigpu/*.toml, read by `read_multigpu_corpus`) add a
`parallel` table of ParallelConfig fields (gpus, nodes, strategy, offload, fsdp_wrap, ...; in the
entry or in [defaults], merged like `run`), optionally `rank` (the rank the source printed; unset:
the worst rank) and `host_ram` (the node's RAM as the source states it, `{ value, unit }`). They are
planned with `vramplan.estimate.plan_ranks`: a GPU measurement is compared with that rank's Breakdown
under the conventions above, and `measured = "host"` (host RAM of one node: offloaded state, pinned
buffers, the loading spike) with `ClusterPlan.host.required_bytes`.
"""
from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vramplan.errors import InputError

CORPUS_DIR = Path(__file__).resolve().parent / "published"
MAX_FILE_BYTES = 512 * 1024
MAX_ENTRIES_PER_FILE = 1000
MAX_TEXT_CHARS = 4000
MAX_VALUE = 1e15  # larger than any memory in bytes or context in tokens a real source prints

SOURCE_KEYS = ("id", "citation", "url", "date", "kind")
ENTRY_KEYS = ("id", "table", "quote", "stack", "recipe", "hardware", "gpu", "model", "run", "unstated",
              "assumed", "measured", "value", "unit")
OPTIONAL_ENTRY_KEYS = ("notes", "versions", "uses", "recipe_note", "parallel", "rank", "host_ram")
ENTRY_ONLY_KEYS = ("id", "table", "quote", "value")  # never inherited from [defaults]
TEXT_KEYS = ("id", "table", "quote", "stack", "recipe", "hardware", "gpu", "model", "assumed", "measured", "unit",
             "notes", "recipe_note")

UNIT_BYTES = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
BYTE_MEASURES = ("allocated", "active", "reserved", "nvidia_smi", "allocated_init", "unstated")
HOST_MEASURES = ("host",)  # host (CPU) RAM of one node, planned by plan_ranks only
MEASURED_UNITS = {**{kind: tuple(UNIT_BYTES) for kind in BYTE_MEASURES + HOST_MEASURES},
                  "max_context": ("tokens",), "oom": ("none",)}
KNOWN_CONVENTION = frozenset(MEASURED_UNITS) - {"unstated"}
DEFAULT_USES = ("transformers", "peft", "bitsandbytes", "torch")  # an HF-based stack; `uses` overrides
MULTIGPU_DIR = CORPUS_DIR / "multigpu"
MULTIGPU_MEASURES = ("allocated", "active", "reserved", "nvidia_smi", "unstated", "oom", "host")


@dataclass(frozen=True)
class Source:
    id: str
    citation: str
    url: str
    date: str
    kind: str


@dataclass(frozen=True)
class Entry:
    source: Source
    id: str
    table: str
    quote: str
    stack: str
    hardware: str
    gpu: str
    model: str
    run: dict
    unstated: tuple[str, ...]
    assumed: str
    measured: str
    value: float
    unit: str
    notes: str = ""
    recipe: str = "none"  # a vramplan recipe (vramplan.stack.recipes.RECIPES) or "none"
    versions: str = ""  # the versions the source states, "pkg=ver,..."; "" = none stated
    uses: tuple[str, ...] = DEFAULT_USES  # the libraries the stack runs (their unstated versions: as on the date)
    recipe_note: str = ""
    parallel: dict | None = None  # ParallelConfig fields; None: a single-GPU entry, planned with plan()
    rank: int | None = None  # the rank the source printed; None: the plan's worst rank
    host_ram_bytes: int | None = None  # the node's RAM as the source states it; None: unstated


@dataclass(frozen=True)
class Comparison:
    entry: Entry
    predicted: float  # in the entry's unit (tokens for max_context, 0/1 = OOM/fits for oom)
    error_pct: float | None  # (predicted - measured) / measured, None where no number is compared
    source_fits: bool
    planner_fits: bool
    planned_stack: str = "current"  # the --stack the entry was planned with
    planned_recipe: str = "none"
    planned_ranks: str = ""  # multi-GPU: the rank role compared ("rank 0", "ranks 0-1"); "" for one GPU

    @property
    def has_verdict(self) -> bool:
        """An init-only reading says nothing about whether the training step fit."""
        return self.entry.measured != "allocated_init"

    @property
    def verdict_agrees(self) -> bool:
        return self.source_fits == self.planner_fits

    @property
    def in_error_stats(self) -> bool:
        return self.error_pct is not None and self.entry.measured in KNOWN_CONVENTION


def stack_run_fields(entry: "Entry", default_stack: bool = False) -> dict:
    """RunConfig `stack` and `recipe` for an entry: its recipe ("none": no field), the versions it states,
    and for the libraries its stack uses whose versions it does not state, the releases current on the
    source's date (validation/published_stack.py). `default_stack`: the current releases, no recipe."""
    from validation.published_stack import NO_RECIPE, planner_stack

    if default_stack:
        return {"stack": "current"}
    fields = {"stack": planner_stack(entry.source.date, entry.versions, entry.uses)}
    if entry.recipe != NO_RECIPE:
        fields["recipe"] = entry.recipe
    return fields


# ---- reading -------------------------------------------------------------------------------

def read_corpus(paths=None) -> list[Entry]:
    """Every entry of the given corpus files or folders (default: validation/published/)."""
    files: list[Path] = []
    for path in [Path(p) for p in (paths or [CORPUS_DIR])]:
        if path.is_dir():
            files.extend(sorted(path.glob("*.toml")))
        else:
            files.append(path)
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for file in files:
        for entry in read_corpus_file(file):
            if entry.id in seen:
                raise InputError(f"{file.name}: entry {entry.id}", f"id also used in {seen[entry.id]}")
            seen[entry.id] = file.name
            entries.append(entry)
    return entries


def read_multigpu_corpus(paths=None) -> list[Entry]:
    """Every entry of validation/published/multigpu/ (or the given files or folders); each has a parallel table."""
    entries = read_corpus(paths or [MULTIGPU_DIR])
    single = [entry.id for entry in entries if entry.parallel is None]
    if single:
        raise InputError(f"entry {single[0]}", "a multi-GPU corpus entry needs a parallel table (gpus, strategy, ...)")
    return entries


def read_corpus_file(path: Path) -> list[Entry]:
    from vramplan.sources.json_file import read_bounded

    raw = read_bounded(Path(path), MAX_FILE_BYTES, "published-corpus file")
    return parse_corpus(raw, Path(path).name)


def parse_corpus(raw: bytes, origin: str) -> list[Entry]:
    """The entries of one corpus file's bytes; anything malformed is a one-line InputError."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(origin, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(origin, f"not valid TOML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(origin, "nested too deeply to be a corpus file") from None
    _only_keys(data, ("source", "defaults", "entry"), origin)
    source = _source(data.get("source"), origin)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InputError(f"{origin}: defaults", "must be a table")
    _only_keys(defaults, [k for k in ENTRY_KEYS + OPTIONAL_ENTRY_KEYS if k not in ENTRY_ONLY_KEYS], f"{origin}: defaults")
    tables = data.get("entry")
    if not isinstance(tables, list) or not tables:
        raise InputError(origin, "needs at least one [[entry]] table")
    if len(tables) > MAX_ENTRIES_PER_FILE:
        raise InputError(origin, f"more than {MAX_ENTRIES_PER_FILE} entries")
    return [_entry(table, defaults, source, f"{origin}: entry {number}") for number, table in enumerate(tables, 1)]


def _source(table, origin: str) -> Source:
    where = f"{origin}: source"
    if not isinstance(table, dict):
        raise InputError(where, "missing [source] table (id, citation, url, date, kind)")
    _only_keys(table, SOURCE_KEYS, where)
    for key in SOURCE_KEYS:
        _text(table, key, where)
    date = table["date"]
    if len(date) != 10 or date[4] != "-" or date[7] != "-" or not (date[:4] + date[5:7] + date[8:]).isdigit():
        raise InputError(f"{where}.date", f"give YYYY-MM-DD (got {date[:40]!r})")
    return Source(**{key: table[key] for key in SOURCE_KEYS})


def _entry(table, defaults: dict, source: Source, where: str) -> Entry:
    if not isinstance(table, dict):
        raise InputError(where, "must be a table")
    _only_keys(table, ENTRY_KEYS + OPTIONAL_ENTRY_KEYS, where)
    if isinstance(table.get("id"), str):
        where = f"{where} ({table['id'][:60]})"
    merged = {**defaults, **table}
    if "run" in defaults or "run" in table:
        base, own = defaults.get("run", {}), table.get("run", {})
        if not isinstance(base, dict) or not isinstance(own, dict):
            raise InputError(f"{where}.run", "must be a table of RunConfig fields")
        merged["run"] = {**base, **own}
    if "parallel" in defaults or "parallel" in table:
        base, own = defaults.get("parallel", {}), table.get("parallel", {})
        if not isinstance(base, dict) or not isinstance(own, dict):
            raise InputError(f"{where}.parallel", "must be a table of ParallelConfig fields (gpus, strategy, offload, ...)")
        merged["parallel"] = {**base, **own}
    missing = [key for key in ENTRY_KEYS if key not in merged]
    if missing:
        raise InputError(where, f"missing {', '.join(missing)}")
    for key in TEXT_KEYS:
        if key in merged:
            _text(merged, key, where)
    unstated = merged["unstated"]
    if not isinstance(unstated, list) or not all(isinstance(item, str) and len(item) <= 200 for item in unstated):
        raise InputError(f"{where}.unstated", "must be a list of short strings (what the source left out)")
    measured, unit = merged["measured"], merged["unit"]
    if measured not in MEASURED_UNITS:
        raise InputError(f"{where}.measured", f"one of {', '.join(MEASURED_UNITS)} (got {measured[:40]!r})")
    if unit not in MEASURED_UNITS[measured]:
        raise InputError(f"{where}.unit", f"for {measured}: one of {', '.join(MEASURED_UNITS[measured])} (got {unit[:40]!r})")
    value = merged["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_VALUE:
        raise InputError(f"{where}.value", f"a number from 0 to {MAX_VALUE:.0e} in the source's unit")
    if measured in BYTE_MEASURES + HOST_MEASURES and value == 0:
        raise InputError(f"{where}.value", f"a {measured} measurement must be above 0")
    _check_run(merged["run"], f"{where}.run")
    parallel = merged.get("parallel")
    if parallel is not None:
        _check_parallel(parallel, f"{where}.parallel")
        if measured not in MULTIGPU_MEASURES:
            raise InputError(f"{where}.measured", f"a multi-GPU entry measures one of {', '.join(MULTIGPU_MEASURES)} "
                                                  f"(got {measured!r})")
    elif measured in HOST_MEASURES or "rank" in merged or "host_ram" in merged:
        raise InputError(f"{where}.parallel", "host, rank and host_ram belong to multi-GPU entries: "
                                              "add a parallel table (gpus, strategy, ...)")
    rank = _rank(merged.get("rank"), parallel, f"{where}.rank")
    host_ram_bytes = _host_ram_bytes(merged.get("host_ram"), f"{where}.host_ram")
    from validation.published_stack import RECIPE_CHOICES, check_uses, check_versions

    if merged["recipe"] not in RECIPE_CHOICES:
        raise InputError(f"{where}.recipe", f"one of {', '.join(RECIPE_CHOICES)} (got {merged['recipe'][:40]!r})")
    if merged["recipe"] == "none" and not merged.get("recipe_note"):
        raise InputError(f"{where}.recipe_note", "say why no vramplan recipe fits the source's framework")
    if not isinstance(merged.get("versions", ""), str):
        raise InputError(f"{where}.versions", "a string of pkg=ver pairs, like torch=2.2,transformers=4.44")
    versions = check_versions(merged.get("versions", "").strip(), f"{where}.versions")
    uses = check_uses(merged.get("uses", list(DEFAULT_USES)), f"{where}.uses")
    return Entry(source=source, id=merged["id"], table=merged["table"], quote=merged["quote"],
                 stack=merged["stack"], hardware=merged["hardware"], gpu=merged["gpu"], model=merged["model"],
                 run=dict(merged["run"]), unstated=tuple(unstated), assumed=merged["assumed"],
                 measured=measured, value=float(value), unit=unit, notes=merged.get("notes", ""),
                 recipe=merged["recipe"], versions=versions, uses=uses, recipe_note=merged.get("recipe_note", ""),
                 parallel=None if parallel is None else dict(parallel), rank=rank, host_ram_bytes=host_ram_bytes)


def _check_run(run: dict, where: str) -> None:
    from vramplan.estimate import make_run
    from vramplan.specs import RunConfig

    unknown = [key for key in run if key not in RunConfig.model_fields]
    if unknown:
        raise InputError(where, f"unknown RunConfig field {unknown[0][:40]!r}")
    try:
        make_run(**run)
    except InputError as exc:
        raise InputError(f"{where}.{exc.field}", exc.message) from None


def _check_parallel(parallel: dict, where: str) -> None:
    from vramplan.estimate import make_parallel
    from vramplan.specs.parallel import ParallelConfig

    unknown = [key for key in parallel if key not in ParallelConfig.model_fields]
    if unknown:
        raise InputError(where, f"unknown ParallelConfig field {str(unknown[0])[:40]!r} "
                                f"(allowed: {', '.join(ParallelConfig.model_fields)})")
    try:
        make_parallel(**parallel)
    except InputError as exc:
        raise InputError(f"{where}.{exc.field}", exc.message) from None


def _rank(rank, parallel: dict | None, where: str) -> int | None:
    if rank is None:
        return None
    from vramplan.estimate import make_parallel

    world_size = make_parallel(**parallel).world_size
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise InputError(where, f"the rank the source printed, 0 to {world_size - 1} (got {str(rank)[:40]})")
    return rank


def _host_ram_bytes(host_ram, where: str) -> int | None:
    """The node's RAM as stated, `{ value = 128, unit = "GB" }`, in bytes; None when unstated."""
    if host_ram is None:
        return None
    if not isinstance(host_ram, dict) or set(host_ram) != {"value", "unit"}:
        raise InputError(where, 'a table { value = 128, unit = "GB" } (the node\'s RAM as the source states it)')
    value, unit = host_ram["value"], host_ram["unit"]
    if unit not in UNIT_BYTES:
        raise InputError(f"{where}.unit", f"one of {', '.join(UNIT_BYTES)} (got {str(unit)[:40]!r})")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value * UNIT_BYTES[unit] <= MAX_VALUE:
        raise InputError(f"{where}.value", f"a number above 0, at most {MAX_VALUE:.0e} bytes")
    return int(value * UNIT_BYTES[unit])


def _only_keys(table: dict, allowed, where: str) -> None:
    extra = [key for key in table if key not in allowed]
    if extra:
        raise InputError(where, f"unknown key {str(extra[0])[:40]!r} (allowed: {', '.join(allowed)})")


def _text(table: dict, key: str, where: str) -> None:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}.{key}", "must be a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise InputError(f"{where}.{key}", f"at most {MAX_TEXT_CHARS} characters")


# ---- comparing -----------------------------------------------------------------------------

def compare(entry: Entry, default_stack: bool = False) -> Comparison:
    """The planner's quantity matching what the entry measured, in the entry's unit, under the entry's
    stack (or the current releases with `default_stack`)."""
    from vramplan.estimate import make_run, plan
    from vramplan.gpus import get_gpu
    from vramplan.resolve import resolve_model
    from vramplan.solvers import max_seq_len

    model, gpu = resolve_model(entry.model), get_gpu(entry.gpu)
    fields = stack_run_fields(entry, default_stack)
    run = make_run(**{**entry.run, **fields})
    applied = {"planned_stack": fields["stack"], "planned_recipe": fields.get("recipe", "none")}
    if entry.parallel is not None:
        return _compare_ranks(entry, model, gpu, run, applied)
    if entry.measured == "max_context":
        best = max_seq_len(model, gpu, run)
        error = None if entry.value == 0 else (best - entry.value) / entry.value
        return Comparison(entry, float(best), error, source_fits=entry.value > 0, planner_fits=best > 0, **applied)
    breakdown = plan(model, gpu, run)
    if entry.measured == "oom":
        return Comparison(entry, float(breakdown.fits), None, source_fits=False, planner_fits=breakdown.fits,
                          **applied)
    predicted = planner_bytes(breakdown, entry.measured) / UNIT_BYTES[entry.unit]
    return Comparison(entry, predicted, (predicted - entry.value) / entry.value,
                      source_fits=True, planner_fits=breakdown.fits, **applied)  # a run that was measured ran


def _compare_ranks(entry: Entry, model, gpu, run, applied: dict) -> Comparison:
    """A multi-GPU entry against `plan_ranks`: the printed rank's (else the worst rank's) Breakdown for a GPU
    measurement, the node's host side for `host`; the verdict is the whole cluster's."""
    from vramplan.estimate import make_parallel, plan_ranks

    cluster = plan_ranks(model, gpu, run, parallel=make_parallel(**entry.parallel), host_ram_bytes=entry.host_ram_bytes)
    role = cluster.worst_rank if entry.rank is None else next(r for r in cluster.ranks if entry.rank in r.ranks)
    applied = {**applied, "planned_ranks": "host" if entry.measured == "host" else role.name}
    if entry.measured == "oom":
        return Comparison(entry, float(cluster.fits), None, source_fits=False, planner_fits=cluster.fits, **applied)
    if entry.measured == "host":
        measured_bytes = cluster.host.required_bytes
    else:
        measured_bytes = planner_bytes(role.breakdown, entry.measured)
    predicted = measured_bytes / UNIT_BYTES[entry.unit]
    return Comparison(entry, predicted, (predicted - entry.value) / entry.value,
                      source_fits=True, planner_fits=cluster.fits, **applied)


def planner_bytes(breakdown, measured: str) -> int:
    """The Breakdown's number for a measurement convention (see the module docstring)."""
    if measured in ("allocated", "active"):
        return breakdown.peak_allocated_bytes
    if measured == "reserved":
        return breakdown.peak_allocated_bytes + breakdown.allocator_reserve_bytes
    if measured in ("nvidia_smi", "unstated"):
        return breakdown.required_bytes
    if measured == "allocated_init":
        return (breakdown.quantized_weights + breakdown.quant_state + breakdown.float_weights
                + breakdown.lora_adapters)
    raise InputError("measured", f"no byte quantity for {measured!r}")


@dataclass(frozen=True)
class Summary:
    comparisons: tuple[Comparison, ...]
    sources: int
    median_abs_error_pct: float | None
    max_abs_error_pct: float | None
    error_entries: int
    verdict_agree: int
    verdict_total: int
    source_oom_called_fits: tuple[str, ...]
    worst: tuple[Comparison, ...] = field(default=())
    per_source: tuple[tuple[str, int, float | None, float | None], ...] = field(default=())  # id, n, median, max


def summarize(comparisons: list[Comparison], worst: int = 5) -> Summary:
    """Median and max |error| over entries with a known convention, verdict agreement, the worst."""
    scored = [c for c in comparisons if c.in_error_stats]
    errors = [abs(c.error_pct) * 100 for c in scored]
    ranked = sorted(scored, key=lambda c: abs(c.error_pct), reverse=True)
    return Summary(
        comparisons=tuple(comparisons),
        sources=len({c.entry.source.id for c in comparisons}),
        median_abs_error_pct=statistics.median(errors) if errors else None,
        max_abs_error_pct=max(errors) if errors else None,
        error_entries=len(errors),
        verdict_agree=sum(c.verdict_agrees for c in comparisons if c.has_verdict),
        verdict_total=sum(c.has_verdict for c in comparisons),
        source_oom_called_fits=tuple(c.entry.id for c in comparisons if not c.source_fits and c.planner_fits),
        worst=tuple(ranked[:worst]),
        per_source=tuple(_source_errors(comparisons)),
    )


def _source_errors(comparisons):
    for source in dict.fromkeys(c.entry.source.id for c in comparisons):
        errors = [abs(c.error_pct) * 100 for c in comparisons if c.entry.source.id == source and c.in_error_stats]
        yield (source, len(errors), statistics.median(errors) if errors else None, max(errors) if errors else None)


# ---- rendering -----------------------------------------------------------------------------

def _number(value: float, unit: str) -> str:
    if unit == "none":
        return "fits" if value else "OOM"
    if unit == "tokens":
        return f"{value:,.0f}" if value else "OOM"
    if unit == "B":
        return f"{value / 2**30:.2f} GiB"
    return f"{value:.2f} {unit}"


def _measured_text(entry: Entry) -> str:
    if entry.measured == "oom":
        return "OOM"
    if entry.unit == "B":
        return f"{entry.value / 2**30:.2f} GiB"
    return _number(entry.value, entry.unit)


def _row(c: Comparison) -> list[str]:
    error = "" if c.error_pct is None else f"{c.error_pct * 100:+.1f}%"
    if error and not c.in_error_stats:
        error = f"({error})"
    verdict = ("ok" if c.verdict_agrees else "DIFFERS") + f" ({'fits' if c.planner_fits else 'OOM'})"
    if not c.has_verdict:
        verdict = "n/a (init only)"
    return [c.entry.id, c.entry.measured, _measured_text(c.entry), _number(c.predicted, c.entry.unit), error, verdict,
            _short_stack(c)]


def _short_stack(c: Comparison) -> str:
    """recipe and the versions that decide the rules (transformers, peft, bitsandbytes), for the table."""
    if c.planned_stack == "current":
        return f"{c.planned_recipe}; current releases"
    pairs = dict(part.split("=") for part in c.planned_stack.split(","))
    named = [f"{short}{pairs[name]}" for name, short in (("transformers", "tf"), ("peft", "peft"), ("bitsandbytes", "bnb"))
             if name in pairs]
    return f"{c.planned_recipe}; " + (" ".join(named) or "current tf/peft/bnb")


HEADER = ["entry", "measured", "source", "planner", "error", "verdict (planner)", "planned stack (recipe; versions)"]


def render_text(summary: Summary) -> str:
    return text_table(HEADER, [_row(c) for c in summary.comparisons], _summary_lines(summary))


def render_markdown(summary: Summary) -> str:
    return markdown_table(HEADER, [_row(c) for c in summary.comparisons], _summary_lines(summary))


def text_table(header: list[str], rows: list[list[str]], footer: list[str]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header, then the footer lines."""
    rows = [header] + rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + ["", *footer])


def markdown_table(header: list[str], rows: list[list[str]], footer: list[str]) -> str:
    """A Markdown table (pipes in cells escaped), then the footer lines as a bullet list."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines + ["", *(f"- {line}" for line in footer)])


def _summary_lines(summary: Summary) -> list[str]:
    def pct(value):
        return "n/a" if value is None else f"{value:.1f}%"

    lines = [
        f"{len(summary.comparisons)} entries from {summary.sources} sources, " + _stack_line(summary),
        f"absolute error over {summary.error_entries} entries with a known convention: median {pct(summary.median_abs_error_pct)}, "
        f"max {pct(summary.max_abs_error_pct)} (unstated-convention errors in parentheses, not counted)",
        f"verdict agreement: {summary.verdict_agree}/{summary.verdict_total} entries with a verdict; source-OOM entries the planner calls fits: "
        + (", ".join(summary.source_oom_called_fits) or "none"),
    ]
    lines.append("per source (entries with a known convention): " + "; ".join(
        f"{source} {count}: median {pct(median)}, max {pct(largest)}" for source, count, median, largest in summary.per_source))
    if summary.worst:
        lines.append("worst: " + "; ".join(f"{c.entry.id} {c.error_pct * 100:+.1f}%" for c in summary.worst))
    return lines


def _all_default(summary: Summary) -> bool:
    return all(c.planned_stack == "current" and c.planned_recipe == "none" for c in summary.comparisons)


def _stack_line(summary: Summary) -> str:
    if _all_default(summary):
        return "planned with the planner's current releases and no recipe (--default-stack)"
    recipes = sorted({c.planned_recipe for c in summary.comparisons})
    return (f"each planned under its own stack: recipe {'/'.join(recipes)} as the source's framework, "
            "stated versions as stated, unstated ones as released on the source's date")


def to_json(summary: Summary) -> dict:
    return {
        "stack_applied": "current releases, no recipe" if _all_default(summary) else "per entry",
        "sources": summary.sources,
        "entries": [
            {"id": c.entry.id, "source": c.entry.source.id, "citation": c.entry.source.citation, "url": c.entry.source.url,
             "date": c.entry.source.date, "table": c.entry.table, "quote": c.entry.quote,
             "stack_stated": c.entry.stack, "versions_stated": c.entry.versions, "uses": list(c.entry.uses),
             "planned_stack": c.planned_stack, "planned_recipe": c.planned_recipe, "recipe_note": c.entry.recipe_note,
             "hardware": c.entry.hardware, "gpu": c.entry.gpu, "model": c.entry.model,
             "run": c.entry.run, "unstated": list(c.entry.unstated), "assumed": c.entry.assumed,
             "measured": c.entry.measured, "unit": c.entry.unit, "value": c.entry.value, "predicted": c.predicted,
             "error_pct": None if c.error_pct is None else c.error_pct * 100, "in_error_stats": c.in_error_stats,
             "has_verdict": c.has_verdict, "source_fits": c.source_fits, "planner_fits": c.planner_fits,
             "notes": c.entry.notes}
            for c in summary.comparisons],
        "summary": {"median_abs_error_pct": summary.median_abs_error_pct, "max_abs_error_pct": summary.max_abs_error_pct,
                    "error_entries": summary.error_entries, "verdict_agree": summary.verdict_agree,
                    "verdict_total": summary.verdict_total,
                    "source_oom_called_fits": list(summary.source_oom_called_fits),
                    "worst": [c.entry.id for c in summary.worst],
                    "per_source": [{"source": source, "error_entries": count, "median_abs_error_pct": median,
                                    "max_abs_error_pct": largest} for source, count, median, largest in summary.per_source]},
    }
