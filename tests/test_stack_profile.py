"""--stack: parsing, versions, detection from package metadata (no imports), and the test-suite pin."""
import subprocess
import sys

import pytest

from vramplan.errors import InputError
from vramplan.estimate import estimate, make_run
from vramplan.stack import profile
from vramplan.stack.profile import CURRENT_RELEASES, STACK_ENV, resolve_stack
from vramplan.stack.version import Version


def test_versions_compare_by_release_number():
    assert Version.parse("0.43.1") < "0.43.2" < "0.44"
    assert Version.parse("4.46") == "4.46.0" and Version.parse("2.13.0+cpu") == "2.13"
    assert Version.parse("5.0.0rc1") >= "5" and Version.parse("4.57.1") < "5"
    assert Version.parse("4.48.3").within("4.46", "4.49") and not Version.parse("4.49").within("4.46", "4.49")


@pytest.mark.parametrize("text", ["4.x", "", "v4.46", "4..46", "1.2.3.4.5", "four"])
def test_bad_version_text_is_refused(text):
    with pytest.raises(ValueError):
        Version.parse(text)


def test_explicit_stack_names_the_packages_it_sets_and_keeps_current_releases_for_the_rest():
    stack = resolve_stack("transformers=4.44,bitsandbytes=0.43.1")
    assert stack["transformers"] == "4.44" and stack["bitsandbytes"] == "0.43.1"
    assert stack["peft"] == CURRENT_RELEASES["peft"] and stack["torch"] == CURRENT_RELEASES["torch"]
    assert stack.source == "explicit"


@pytest.mark.parametrize("text, says", [
    ("transformer=4.44", "unknown package 'transformer'"),
    ("bnb=0.43", "allowed packages: transformers, peft, bitsandbytes, torch, trl, unsloth"),
    ("transformers=4.x", "not a version number"),
    ("transformers", "package=version pairs"),
    ("transformers=4.44,transformers=4.46", "given twice"),
    ("transformers=4.44,", "package=version pairs"),
])
def test_bad_stack_is_an_input_error_naming_the_flag(text, says):
    with pytest.raises(InputError) as caught:
        resolve_stack(text)
    assert caught.value.field == "--stack" and says in caught.value.message
    with pytest.raises(InputError) as through_run:
        make_run(stack=text)
    assert through_run.value.field == "stack" and says in through_run.value.message


def test_cli_bad_stack_exits_2_naming_the_flag():
    done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "fit", "--stack", "bitsandbytes=new"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --stack: bitsandbytes: not a version number") and "Traceback" not in done.stderr


def test_auto_reads_installed_versions_from_metadata(monkeypatch):
    monkeypatch.delenv(STACK_ENV, raising=False)
    monkeypatch.setattr(profile, "installed_versions", lambda: {"transformers": Version.parse("4.45.2")})
    profile._resolve.cache_clear()
    stack = resolve_stack("auto")
    profile._resolve.cache_clear()
    assert stack["transformers"] == "4.45.2" and stack["bitsandbytes"] == CURRENT_RELEASES["bitsandbytes"]
    assert stack.source == "auto: installed"


def test_auto_with_nothing_installed_is_the_current_releases_and_gives_todays_plan(monkeypatch):
    monkeypatch.delenv(STACK_ENV, raising=False)
    monkeypatch.setattr(profile, "installed_versions", lambda: {})
    profile._resolve.cache_clear()
    try:
        stack = resolve_stack("auto")
        bare = estimate("llama-3.1-8b", "a10g", seq_len=2048)
    finally:
        profile._resolve.cache_clear()
    assert dict(stack.versions) == {name: Version.parse(v) for name, v in CURRENT_RELEASES.items()}
    pinned = estimate("llama-3.1-8b", "a10g", seq_len=2048, stack="current")
    assert bare.phase_peaks == pinned.phase_peaks and bare.terms == pinned.terms
    assert bare.stack["source"] == "auto: nothing installed, current releases"


def test_the_suite_pins_auto_to_the_current_releases():
    assert resolve_stack("auto").source == f"{STACK_ENV}=current"
    assert estimate("13b", "t4").stack["transformers"] == CURRENT_RELEASES["transformers"]


def test_detection_reads_metadata_without_importing_the_libraries():
    code = ("import sys; from vramplan.stack.profile import installed_versions; found = installed_versions(); "
            "heavy = [m for m in ('transformers', 'peft', 'bitsandbytes', 'torch', 'trl', 'unsloth') if m in sys.modules]; "
            "print(sorted(found), heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy = done.stdout.strip().rsplit(" ", 1)
    assert heavy == "[]"


def test_installed_versions_match_importlib_metadata():
    import importlib.metadata as metadata

    for name, version in profile.installed_versions().items():
        assert version == Version.parse(metadata.version(name))
