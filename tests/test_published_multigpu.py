"""Multi-GPU entries of the published corpus (validation/published/multigpu/) and their plan_ranks comparison."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from vramplan.cli.main import main
from vramplan.errors import InputError
from vramplan.estimate import make_parallel, make_run, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model
from vramplan.specs.parallel import ParallelConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from validation import published  # noqa: E402
from validation import published_multigpu  # noqa: E402

SOURCE = '''[source]
id = "s"
citation = "a README, table 1"
url = "https://example.org/readme"
date = "2024-03-01"
kind = "README"

[defaults]
parallel = { gpus = 2, strategy = "fsdp" }
'''
ENTRY = '''
[[entry]]
id = "m1"
table = "table 1, row 1"
quote = "| 70B | 2x 24GB | 14.9 GiB |"
stack = "unstated"
recipe = "hf-trainer"
hardware = "2x RTX 3090"
gpu = "rtx3090"
model = "llama-2-70b"
run = { method = "qlora", seq_len = 512 }
unstated = ["optimizer"]
assumed = "adamw"
measured = "reserved"
value = 14.9
unit = "GiB"
'''


@pytest.fixture(scope="module")
def entries():
    return published.read_multigpu_corpus()


@pytest.fixture(scope="module")
def comparisons(entries):
    return published_multigpu.compare_all(entries)


def parse(text: str):
    return published.parse_corpus(text.encode(), "m.toml")


def test_the_multigpu_corpus_has_entries_from_several_sources_with_gpu_and_host_measurements(entries):
    assert len(entries) >= 12
    assert len({entry.source.id for entry in entries}) >= 4
    kinds = {entry.measured for entry in entries}
    assert "host" in kinds and kinds & {"allocated", "reserved"}


def test_every_multigpu_entry_is_a_valid_parallel_config_and_run(entries):
    for entry in entries:
        parallel = make_parallel(**entry.parallel)
        assert parallel.world_size > 1, entry.id
        make_run(**entry.run)
        assert entry.quote and entry.source.url.startswith("https://"), entry.id
        if entry.rank is not None:
            assert 0 <= entry.rank < parallel.world_size


def test_the_single_gpu_corpus_stays_single_gpu():
    assert all(entry.parallel is None for entry in published.read_corpus())


def test_an_entry_parallel_table_is_merged_over_the_defaults():
    [entry] = parse(SOURCE + ENTRY.replace('run = {', 'parallel = { offload = "params" }\nrun = {'))
    assert entry.parallel == {"gpus": 2, "strategy": "fsdp", "offload": "params"}
    assert entry.rank is None and entry.host_ram_bytes is None


def test_host_ram_and_rank_are_read_in_bytes_and_checked_against_the_world_size():
    [entry] = parse(SOURCE + ENTRY + 'rank = 1\nhost_ram = { value = 128, unit = "GB" }\n')
    assert entry.rank == 1 and entry.host_ram_bytes == 128 * 10**9


MALFORMED = [
    ("unknown parallel field", SOURCE + ENTRY.replace('run = {', 'parallel = { gpu_count = 2 }\nrun = {'),
     "m.toml: entry 1 (m1).parallel: unknown ParallelConfig field 'gpu_count' (allowed: gpus, nodes"),
    ("bad parallel value", SOURCE + ENTRY.replace('run = {', 'parallel = { strategy = "zero4" }\nrun = {'),
     "parallel.strategy"),
    ("inconsistent parallel", SOURCE + ENTRY.replace('run = {', 'parallel = { offload = "optimizer" }\nrun = {'),
     "FSDP offloads parameters"),
    ("parallel not a table", SOURCE.replace('parallel = { gpus = 2, strategy = "fsdp" }', 'parallel = 2') + ENTRY,
     "parallel: must be a table of ParallelConfig fields"),
    ("host without parallel", SOURCE.replace('parallel = { gpus = 2, strategy = "fsdp" }', '') +
     ENTRY.replace('"reserved"', '"host"'), "host, rank and host_ram belong to multi-GPU entries"),
    ("max_context on many GPUs", SOURCE + ENTRY.replace('"reserved"', '"max_context"').replace('"GiB"', '"tokens"'),
     "a multi-GPU entry measures one of"),
    ("rank past the world size", SOURCE + ENTRY + "rank = 2\n", "rank: the rank the source printed, 0 to 1"),
    ("host_ram without a unit", SOURCE + ENTRY + "host_ram = 128\n", "host_ram: a table"),
    ("host_ram in TB", SOURCE + ENTRY + 'host_ram = { value = 1, unit = "TB" }\n', "host_ram.unit: one of"),
    ("zero host RAM", SOURCE + ENTRY.replace('"reserved"', '"host"').replace("value = 14.9", "value = 0"),
     "must be above 0"),
]


@pytest.mark.parametrize("content, message", [(c, m) for _, c, m in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_a_malformed_multigpu_entry_is_a_one_line_error(content, message):
    with pytest.raises(InputError) as raised:
        parse(content)
    text = str(raised.value)
    assert message in text and "\n" not in text


def test_the_multigpu_reader_refuses_an_entry_without_a_parallel_table(tmp_path):
    (tmp_path / "one.toml").write_text(SOURCE.replace('parallel = { gpus = 2, strategy = "fsdp" }', '') + ENTRY)
    with pytest.raises(InputError, match="needs a parallel table"):
        published.read_multigpu_corpus([tmp_path])


def test_unknown_parallel_fields_are_named_from_parallel_config():
    with pytest.raises(InputError) as raised:
        parse(SOURCE + ENTRY.replace('run = {', 'parallel = { zero_stage = 3 }\nrun = {'))
    assert all(name in str(raised.value) for name in ParallelConfig.model_fields)


def test_every_entry_is_planned_with_plan_ranks_and_compared_with_the_matching_quantity(entries, comparisons):
    assert len(comparisons) == len(entries)
    for entry, comparison in zip(entries, comparisons):
        run = make_run(**entry.run, **published.stack_run_fields(entry))
        cluster = plan_ranks(resolve_model(entry.model), get_gpu(entry.gpu), run,
                             parallel=make_parallel(**entry.parallel), host_ram_bytes=entry.host_ram_bytes)
        if entry.measured == "host":
            expected = cluster.host.required_bytes
            assert comparison.planned_ranks == "host"
        else:
            role = cluster.worst_rank if entry.rank is None else next(r for r in cluster.ranks if entry.rank in r.ranks)
            expected = published.planner_bytes(role.breakdown, entry.measured)
            assert comparison.planned_ranks == role.name
        assert comparison.predicted == pytest.approx(expected / published.UNIT_BYTES[entry.unit], rel=1e-12)
        assert comparison.error_pct == pytest.approx((comparison.predicted - entry.value) / entry.value, rel=1e-12)
        assert comparison.planner_fits == cluster.fits


def test_gpu_and_host_errors_are_summarized_apart(comparisons):
    summary = published_multigpu.summarize_multigpu(comparisons)
    gpu = [abs(c.error_pct) * 100 for c in comparisons if c.in_error_stats and c.entry.measured != "host"]
    host = [abs(c.error_pct) * 100 for c in comparisons if c.in_error_stats and c.entry.measured == "host"]
    assert summary.gpu.error_entries == len(gpu) > 0 and summary.host.error_entries == len(host) > 0
    assert summary.gpu.median_abs_error_pct == pytest.approx(statistics.median(gpu))
    assert summary.host.max_abs_error_pct == pytest.approx(max(host))


def test_the_command_adds_the_multigpu_section_and_keeps_the_single_gpu_rows(capsys, entries):
    assert main(["validate", "published", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in data["entries"]] == [entry.id for entry in published.read_corpus()]
    rows = data["multi_gpu"]["entries"]
    assert [row["id"] for row in rows] == [entry.id for entry in entries]
    assert all(row["parallel"] and row["compared"] for row in rows)
    assert set(data["multi_gpu"]["summary"]) == {"gpu", "host"}
    assert main(["validate", "published"]) == 0
    out = capsys.readouterr().out
    assert "multi-GPU (plan_ranks" in out and all(entry.id in out for entry in entries)
    assert "per-rank GPU: absolute error" in out and "host RAM: absolute error" in out


def test_a_path_to_the_multigpu_folder_shows_only_the_multigpu_section(capsys):
    assert main(["validate", "published", str(published.MULTIGPU_DIR), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"multi_gpu"}
