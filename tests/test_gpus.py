"""GPU profiles: bundled TOMLs load (from the source tree and from a built wheel), names and
sizes resolve, user TOML files work and bad ones give one-line errors."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vramplan.errors import InputError
from vramplan.gpus import get_gpu, list_gpus, parse_size

REPO = Path(__file__).resolve().parent.parent
EXPECTED_KEYS = {
    "t4", "v100-16g", "v100-32g", "rtx3060", "rtx3090", "rtx4090", "a10g", "l4", "rtx-a6000",
    "l40s", "a100-40g", "a100-80g", "h100-pcie", "h100-sxm", "h200", "mi300x", "m2-max-96g",
    "m3-max-128g",
}


def test_every_profile_loads_sorted_by_memory():
    gpus = list_gpus()
    assert {g.key for g in gpus} == EXPECTED_KEYS
    sizes = [g.total_memory_bytes for g in gpus]
    assert sizes == sorted(sizes)
    for gpu in gpus:
        assert gpu.source and gpu.notes, gpu.key


def test_every_profile_names_where_its_total_memory_comes_from():
    """A URL or repository path of a published print, an index id of one, or an explicit 'no print'."""
    for gpu in list_gpus():
        if gpu.vendor in ("apple", "custom"):
            continue
        cited = any(mark in gpu.source for mark in ("https://", "/", "find_string id"))
        assert cited and (gpu.source.startswith("no ") or "get_device_properties printed" in gpu.source), gpu.key
        assert "in public logs" not in gpu.source, gpu.key


def test_profiles_state_precision_support_from_compute_capability():
    for gpu in list_gpus():
        if gpu.vendor != "nvidia":
            continue
        capability = tuple(int(part) for part in gpu.compute_capability.split("."))
        assert gpu.bf16 == (capability >= (8, 0)), gpu.key
        assert gpu.fp8 == (capability >= (8, 9)), gpu.key
        hopper = capability >= (9, 0)
        assert gpu.cublas_workspace_bytes == (32 * 2**20 if hopper else 8 * 2**20 + 128 * 2**10), gpu.key


def test_total_memory_is_what_torch_reports_not_the_marketing_number():
    assert get_gpu("t4").total_memory_bytes / 2**30 == pytest.approx(14.75, abs=0.01)
    # torch's OOM message on an L4: "a total capacity of 22.03 GiB" (nvidia-smi: 23034 MiB)
    assert round(get_gpu("l4").total_memory_bytes / 2**30, 2) == 22.03
    assert get_gpu("a100-40g").total_memory_bytes == 42_298_834_944
    assert get_gpu("h100").total_memory_bytes < 80 * 2**30


def test_apple_profiles_are_unified_with_a_working_set_limit():
    mac = get_gpu("m3-max-128g")
    assert mac.vendor == "apple" and mac.unified_memory
    assert mac.capacity_bytes == int(128 * 2**30 * 0.75)


@pytest.mark.parametrize(
    "name, key",
    [("T4", "t4"), ("a100", "a100-80g"), ("A100-80G", "a100-80g"), ("a100-40g", "a100-40g"),
     ("h100", "h100-sxm"), ("3090", "rtx3090"), ("RTX3090", "rtx3090"), ("4090", "rtx4090"),
     ("rtx_4090", "rtx4090"), ("mi300x", "mi300x"), ("a6000", "rtx-a6000")],
)
def test_keys_and_aliases_resolve(name, key):
    assert get_gpu(name).key == key


@pytest.mark.parametrize(
    "text, expected",
    [("24GiB", 24 * 2**30), ("24GB", 24 * 10**9), ("80G", 80 * 2**30), ("16384MiB", 16 * 2**30),
     ("1.5TiB", int(1.5 * 2**40)), ("48 gib", 48 * 2**30)],
)
def test_sizes_make_a_custom_gpu(text, expected):
    gpu = get_gpu(text)
    assert gpu.total_memory_bytes == expected
    assert gpu.vendor == "custom" and gpu.bf16


@pytest.mark.parametrize(
    "text, reading",
    [("24GB", "24GB read as 24 x 10^9 bytes = 22.35 GiB"), ("24G", "24G read as 24 x 2^30 bytes = 24.00 GiB"),
     ("16384MiB", "16384MiB read as 16384 x 2^20 bytes = 16.00 GiB"), ("1.5TB", "1.5TB read as 1.5 x 10^12 bytes")],
)
def test_a_size_given_as_the_gpu_says_in_the_plan_how_it_was_read(text, reading):
    from vramplan.estimate import estimate

    notes = estimate(model="7b", gpu=text).notes
    assert any(reading in note and "decimal" in note for note in notes), notes


def test_fit_prints_how_24GB_and_24G_were_read(capsys):
    from vramplan.cli.main import main

    for text, reading in (("24GB", "22.35 GiB"), ("24G", "24.00 GiB")):
        main(["fit", "--model", "7b", "--gpu", text])
        out = capsys.readouterr().out
        assert f"note: GPU size {text} read as" in out and reading in out


def test_a_bundled_profile_gets_no_size_note():
    from vramplan.estimate import estimate

    assert not any("read as" in note for note in estimate(model="7b", gpu="a100").notes)


def test_parse_size_rejects_non_sizes():
    assert parse_size("24") is None and parse_size("24 parsecs") is None and parse_size("a100") is None


def test_unknown_gpu_suggests_close_names():
    with pytest.raises(InputError) as info:
        get_gpu("h1000")
    assert info.value.field == "gpu"
    assert "did you mean" in str(info.value) and "h100" in str(info.value)
    assert "\n" not in str(info.value)


def test_ambiguous_gpu_name_lists_candidates():
    with pytest.raises(InputError, match="ambiguous GPU 'rtx'"):
        get_gpu("rtx")


def test_zero_size_is_rejected():
    with pytest.raises(InputError, match="positive"):
        get_gpu("0GiB")


def test_user_toml_file(tmp_path):
    path = tmp_path / "my-card.toml"
    path.write_text('name = "My Card"\ntotal_memory_bytes = 25769803776\nbf16 = false\n')
    gpu = get_gpu(str(path))
    assert gpu.key == "my-card" and gpu.name == "My Card" and not gpu.bf16
    assert gpu.total_memory_bytes == 24 * 2**30


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("total_memory_bytes = = 3\n")
    with pytest.raises(InputError) as info:
        get_gpu(str(path))
    assert str(path) in info.value.field and "not valid TOML" in str(info.value)


@pytest.mark.parametrize(
    "body, field",
    [("total_memory_bytes = -1\n", "total_memory_bytes"),
     ('total_memory_bytes = 1\nvendor = "intel"\n', "vendor"),
     ("total_memory_bytes = 1\ncolour = 3\n", "colour"),
     ("bf16 = true\n", "total_memory_bytes")],
)
def test_bad_fields_name_the_file_and_field(tmp_path, body, field):
    path = tmp_path / "card.toml"
    path.write_text(body)
    with pytest.raises(InputError) as info:
        get_gpu(str(path))
    assert str(path) in info.value.field and field in info.value.field
    assert "\n" not in str(info.value)


def test_missing_toml_file():
    with pytest.raises(InputError, match="no such GPU profile file"):
        get_gpu("/nonexistent/card.toml")


@pytest.mark.slow
def test_wheel_ships_gpu_profiles_and_loads_them(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("vramplan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "vramplan/gpu_profiles/t4.toml" in names
    assert "vramplan/catalog/models.toml" in names
    # Load from the unpacked wheel (package data), not from the source tree.
    probe = (
        "import vramplan.gpus as g, pathlib; d = g._profile_dir();"
        "assert 'site' in str(d), d; print(g.get_gpu('t4').name)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == "Tesla T4"
