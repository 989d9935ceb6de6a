"""The corpus of published measurements (validation/published/) and `vramplan validate published`."""
from __future__ import annotations

import json
import re
import statistics
import sys
from datetime import date as date_type, timedelta
from pathlib import Path

import pytest

from vramplan.cli.main import main
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model
from vramplan.solvers import max_seq_len

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from validation import published  # noqa: E402
from validation import published_stack  # noqa: E402
from vramplan.stack.profile import parse_explicit, resolve_stack  # noqa: E402
from vramplan.stack.version import Version  # noqa: E402

GOOD_SOURCE = '''[source]
id = "s"
citation = "a paper, table 1"
url = "https://example.org/paper"
date = "2024-01-02"
kind = "paper"
'''
GOOD_ENTRY = '''
[[entry]]
id = "e1"
table = "table 1, row 1"
quote = "| 7B | 10.0 GB |"
stack = "unstated"
recipe = "hf-trainer"
hardware = "1x A100 80GB"
gpu = "a100-80g"
model = "llama-2-7b"
run = { method = "qlora", seq_len = 512 }
unstated = ["optimizer"]
assumed = "adamw"
measured = "allocated"
value = 10.0
unit = "GB"
'''


@pytest.fixture(scope="module")
def entries():
    return published.read_corpus()


@pytest.fixture(scope="module")
def comparisons(entries):
    return [published.compare(entry) for entry in entries]


def test_the_corpus_has_at_least_25_entries_from_at_least_6_sources(entries):
    assert len(entries) >= 25
    assert len({entry.source.id for entry in entries}) >= 6
    assert len({entry.source.url for entry in entries}) >= 6


def test_every_entry_has_every_field_filled(entries):
    for entry in entries:
        for key in published.ENTRY_KEYS:
            value = getattr(entry, key)
            assert value is not None and value != "", (entry.id, key)
        assert entry.source.url.startswith("https://") and entry.source.citation and entry.source.date
        assert entry.unit in published.MEASURED_UNITS[entry.measured]
        assert entry.run.get("method"), entry.id  # the run's method is always stated or assumed
        make_run(**entry.run)  # every run is a valid RunConfig


def test_entry_ids_are_unique(entries):
    assert len({entry.id for entry in entries}) == len(entries)


def test_each_planner_quantity_is_the_plan_number_for_that_convention(entries, comparisons):
    by_kind = {}
    for comparison in comparisons:
        by_kind.setdefault(comparison.entry.measured, comparison)
    assert {"allocated", "nvidia_smi", "max_context", "oom"} <= set(by_kind)
    for kind, comparison in by_kind.items():
        entry = comparison.entry
        run = make_run(**entry.run, **published.stack_run_fields(entry))
        model, gpu = resolve_model(entry.model), get_gpu(entry.gpu)
        if kind == "max_context":
            assert comparison.predicted == max_seq_len(model, gpu, run)
            continue
        breakdown = plan(model, gpu, run)
        if kind == "oom":
            assert comparison.planner_fits == breakdown.fits and not comparison.source_fits
            continue
        expected = {"allocated": breakdown.peak_allocated_bytes, "active": breakdown.peak_allocated_bytes,
                    "reserved": breakdown.peak_allocated_bytes + breakdown.allocator_reserve_bytes,
                    "nvidia_smi": breakdown.required_bytes, "unstated": breakdown.required_bytes,
                    "allocated_init": breakdown.quantized_weights + breakdown.quant_state
                    + breakdown.float_weights + breakdown.lora_adapters}[kind]
        assert comparison.predicted == pytest.approx(expected / published.UNIT_BYTES[entry.unit], rel=1e-12)
        assert comparison.error_pct == pytest.approx((comparison.predicted - entry.value) / entry.value, rel=1e-12)


def test_the_command_summary_matches_a_recomputation(capsys, comparisons):
    assert main(["validate", "published", "--json", "--worst", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["entries"]
    assert [row["id"] for row in rows] == [c.entry.id for c in comparisons]
    counted = [abs(row["error_pct"]) for row in rows
               if row["error_pct"] is not None and row["measured"] != "unstated"]
    summary = data["summary"]
    assert summary["error_entries"] == len(counted) > 0
    assert summary["median_abs_error_pct"] == pytest.approx(statistics.median(counted))
    assert summary["max_abs_error_pct"] == pytest.approx(max(counted))
    judged = [row for row in rows if row["has_verdict"]]
    assert summary["verdict_agree"] == sum(row["source_fits"] == row["planner_fits"] for row in judged)
    assert summary["verdict_total"] == len(judged) == len(rows) - sum(row["measured"] == "allocated_init" for row in rows)
    assert summary["source_oom_called_fits"] == [row["id"] for row in rows if not row["source_fits"] and row["planner_fits"]]
    worst = sorted((row for row in rows if row["in_error_stats"]), key=lambda row: abs(row["error_pct"]), reverse=True)
    assert summary["worst"] == [row["id"] for row in worst[:3]]
    assert data["stack_applied"] == "per entry" and all(row["stack_stated"] for row in rows)
    assert [(row["planned_stack"], row["planned_recipe"]) for row in rows] == \
        [(c.planned_stack, c.planned_recipe) for c in comparisons]


def test_the_text_table_lists_every_entry_and_the_summary(capsys, entries):
    assert main(["validate", "published"]) == 0
    out = capsys.readouterr().out
    assert all(entry.id in out for entry in entries)
    assert "median" in out and "verdict agreement" in out and "worst:" in out


SAMPLE_DATES = ("2024-04-15", "2024-05-27", "2024-11-18", "2025-01-14", "2025-04-10")


def test_the_release_data_file_holds_only_final_releases_the_stack_parser_accepts():
    dates = published_stack.release_dates()
    assert set(dates) == set(published_stack.DATED_PACKAGES)
    for package, releases in dates.items():
        assert len(releases) > 5, package
        for version, day in releases.items():
            assert re.fullmatch(r"\d+\.\d+(\.\d+)?", version) and len(day) == 10, (package, version)
            parse_explicit(f"{package}={version}")


@pytest.mark.parametrize("date", SAMPLE_DATES)
def test_the_date_rule_picks_the_highest_final_release_uploaded_by_that_day(date):
    dates = published_stack.release_dates()
    text = published_stack.versions_on(date)
    chosen = dict(part.split("=") for part in text.split(","))
    assert list(chosen) == list(published_stack.DATED_PACKAGES)
    for package, version in chosen.items():
        released = [v for v, day in dates[package].items() if day <= date]
        assert dates[package][version] <= date
        assert all(Version.parse(v) <= Version.parse(version) for v in released), (package, version)
    resolve_stack(text)  # a valid --stack


def test_a_release_counts_from_its_upload_day_not_the_day_before():
    day = published_stack.release_dates()["transformers"]["4.48.0"]
    before = (date_type.fromisoformat(day) - timedelta(days=1)).isoformat()
    assert published_stack.release_on("transformers", day) == "4.48.0"
    assert Version.parse(published_stack.release_on("transformers", before)) < "4.48"


def test_the_unsloth_readme_date_gets_the_transformers_with_the_shifted_fp32_copy(entries):
    from vramplan.stack.rules import causal_lm_loss_upcast

    entry = next(e for e in entries if e.id == "unsloth-8b-hf-24gb")
    stack = resolve_stack(published.stack_run_fields(entry)["stack"])
    assert causal_lm_loss_upcast(stack["transformers"]) == "loss_shifted_copy"


def test_stated_versions_are_kept_and_the_rest_come_from_the_date(entries):
    fms = next(e for e in entries if e.source.id == "fms-acceleration-refs")
    pairs = dict(part.split("=") for part in published.stack_run_fields(fms)["stack"].split(","))
    assert pairs["torch"] == "2.2" == dict(part.split("=") for part in fms.versions.split(","))["torch"]
    assert pairs["bitsandbytes"] == published_stack.release_on("bitsandbytes", fms.source.date)
    text = published_stack.planner_stack("2025-01-14", "transformers=4.44", ("transformers", "peft"))
    assert text == "transformers=4.44,peft=" + published_stack.release_on("peft", "2025-01-14")


def test_libraries_a_stack_does_not_use_keep_the_current_release(entries):
    torchtune = next(e for e in entries if e.source.id == "torchtune-readme")
    stack = resolve_stack(published.stack_run_fields(torchtune)["stack"])
    current = resolve_stack("current")
    assert [stack[p] for p in ("transformers", "peft", "bitsandbytes")] == \
        [current[p] for p in ("transformers", "peft", "bitsandbytes")]
    assert stack["torch"] == published_stack.release_on("torch", torchtune.source.date)


def test_every_entry_names_a_recipe_and_none_says_why(entries):
    for entry in entries:
        assert entry.recipe in published_stack.RECIPE_CHOICES
        assert entry.recipe != "none" or entry.recipe_note, entry.id
    recipes = {e.id: e.recipe for e in entries}
    assert recipes["unsloth-8b-hf-24gb"] == "hf-trainer" and recipes["unsloth-8b-unsloth-24gb"] == "unsloth"
    assert recipes["litgpt-llama2-7b-qlora"] == "none"


def test_the_applied_stack_and_recipe_reach_the_run_and_the_plan(entries, comparisons):
    for entry, comparison in zip(entries, comparisons):
        fields = published.stack_run_fields(entry)
        run = make_run(**entry.run, **fields)
        assert run.stack == comparison.planned_stack == fields["stack"]
        assert (run.recipe or "none") == comparison.planned_recipe == entry.recipe
    fms = next(c for c in comparisons if c.entry.id == "fms-mistral7b-qlora-bs4")
    run = make_run(**fms.entry.run, **published.stack_run_fields(fms.entry))
    stack = plan(resolve_model(fms.entry.model), get_gpu(fms.entry.gpu), run).stack
    assert stack["bitsandbytes"] == "0.43.1" and stack["recipe"] == "hf-trainer" and stack["bnb_4bit_keeps_inputs"]
    assert run.kbit_prep is True  # the hf-trainer recipe filled the knob the entry left out


def test_the_default_stack_plans_with_the_current_releases_and_no_recipe(entries, capsys):
    entry = next(e for e in entries if e.id == "unsloth-8b-hf-24gb")
    old, new = published.compare(entry, default_stack=True), published.compare(entry)
    assert (old.planned_stack, old.planned_recipe) == ("current", "none")
    model, gpu = resolve_model(entry.model), get_gpu(entry.gpu)
    assert old.predicted == max_seq_len(model, gpu, make_run(**entry.run, stack="current"))
    assert new.predicted < old.predicted  # the shifted fp32 logits copy of transformers 4.46-4.48
    assert main(["validate", "published", "--default-stack"]) == 0
    assert "no recipe (--default-stack)" in capsys.readouterr().out


def test_a_minimal_file_parses_and_defaults_are_inherited(tmp_path):
    text = GOOD_SOURCE + '\n[defaults]\nrun = { method = "lora", seq_len = 256 }\nhardware = "h"\n' + \
        GOOD_ENTRY.replace('hardware = "1x A100 80GB"\n', "").replace('run = { method = "qlora", seq_len = 512 }', 'run = { seq_len = 1024 }')
    [entry] = published.parse_corpus(text.encode(), "x.toml")
    assert entry.run == {"method": "lora", "seq_len": 1024} and entry.hardware == "h"


MALFORMED = [
    ("not toml", b"this is = = not toml", "not valid TOML"),
    ("not utf-8", b"\xff\xfe id", "not UTF-8"),
    ("no source", GOOD_ENTRY.encode(), "missing [source]"),
    ("no entries", GOOD_SOURCE.encode(), "at least one [[entry]]"),
    ("unknown top key", (GOOD_SOURCE + "extra = 1\n" + GOOD_ENTRY).encode(), "unknown key 'extra'"),
    ("bad date", (GOOD_SOURCE.replace("2024-01-02", "Jan 2024") + GOOD_ENTRY).encode(), "YYYY-MM-DD"),
    ("missing field", (GOOD_SOURCE + GOOD_ENTRY.replace('quote = "| 7B | 10.0 GB |"\n', "")).encode(), "missing quote"),
    ("unknown entry key", (GOOD_SOURCE + GOOD_ENTRY + 'colour = "red"\n').encode(), "unknown key 'colour'"),
    ("bad measured", (GOOD_SOURCE + GOOD_ENTRY.replace('"allocated"', '"vibes"')).encode(), "measured: one of"),
    ("unit for the convention", (GOOD_SOURCE + GOOD_ENTRY.replace('unit = "GB"', 'unit = "tokens"')).encode(), "unit: for allocated"),
    ("negative value", (GOOD_SOURCE + GOOD_ENTRY.replace("value = 10.0", "value = -1")).encode(), "value: a number"),
    ("boolean value", (GOOD_SOURCE + GOOD_ENTRY.replace("value = 10.0", "value = true")).encode(), "value: a number"),
    ("nan value", (GOOD_SOURCE + GOOD_ENTRY.replace("value = 10.0", "value = nan")).encode(), "value: a number"),
    ("zero bytes", (GOOD_SOURCE + GOOD_ENTRY.replace("value = 10.0", "value = 0")).encode(), "must be above 0"),
    ("unknown run field", (GOOD_SOURCE + GOOD_ENTRY.replace("seq_len = 512", "seq_length = 512")).encode(), "unknown RunConfig field"),
    ("bad run value", (GOOD_SOURCE + GOOD_ENTRY.replace("seq_len = 512", "seq_len = 0")).encode(), "run.seq_len"),
    ("unstated not a list", (GOOD_SOURCE + GOOD_ENTRY.replace('["optimizer"]', '"optimizer"')).encode(), "unstated"),
    ("empty text", (GOOD_SOURCE + GOOD_ENTRY.replace('stack = "unstated"', 'stack = ""')).encode(), "stack: must be a non-empty"),
    ("unknown recipe", (GOOD_SOURCE + GOOD_ENTRY.replace('recipe = "hf-trainer"', 'recipe = "litgpt"')).encode(), "recipe: one of"),
    ("no recipe without a reason", (GOOD_SOURCE + GOOD_ENTRY.replace('recipe = "hf-trainer"', 'recipe = "none"')).encode(), "recipe_note"),
    ("bad stated versions", (GOOD_SOURCE + GOOD_ENTRY + 'versions = "torch=two"\n').encode(), "versions: torch"),
    ("unknown package used", (GOOD_SOURCE + GOOD_ENTRY + 'uses = ["torchao"]\n').encode(), "uses: a list"),
    ("entry-only key in defaults", (GOOD_SOURCE + '[defaults]\nvalue = 3\n' + GOOD_ENTRY).encode(), "defaults: unknown key 'value'"),
]


@pytest.mark.parametrize("content, message", [(c, m) for _, c, m in MALFORMED], ids=[name for name, _, _ in MALFORMED])
def test_a_malformed_file_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        published.read_corpus([path])
    text = str(raised.value)
    assert message in text and "\n" not in text and text.startswith("bad.toml")


def test_duplicate_ids_across_files_are_refused(tmp_path):
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text(GOOD_SOURCE + GOOD_ENTRY)
    with pytest.raises(InputError, match="id also used in a.toml"):
        published.read_corpus([tmp_path])


def test_an_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.toml"
    path.write_bytes(b"#" * (published.MAX_FILE_BYTES + 1))
    with pytest.raises(InputError, match="larger than"):
        published.read_corpus([path])


def test_the_cli_exits_2_with_one_line_on_a_malformed_file(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_SOURCE + GOOD_ENTRY.replace('"allocated"', '"vibes"'))
    assert main(["validate", "published", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "measured: one of" in err
