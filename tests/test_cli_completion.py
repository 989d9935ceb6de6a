"""`vramplan completion bash` completes commands, every flag of a command, and names."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from vramplan.cli.main import main
from vramplan.present import flag_name
from vramplan.specs.run import RunConfig


def test_the_script_lists_every_command_and_every_fit_flag(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    commands_line = next(line for line in script.splitlines() if "compgen -W \"fit" in line)
    for command in ("fit", "max", "compare", "sweep", "explain", "models", "gpus", "plot", "report", "tui",
                    "validate"):
        assert f" {command} " in commands_line or f'"{command} ' in commands_line, command
    fit_line = next(line for line in script.splitlines() if line.strip().startswith("fit)"))
    for field in RunConfig.model_fields:
        assert flag_name(field) in fit_line, field


def test_names_lists_are_one_per_line(capsys):
    assert main(["models", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert "llama-2-13b" in names and "13b" in names
    assert main(["gpus", "--names"]) == 0
    assert {"t4", "a100"} <= set(capsys.readouterr().out.split())


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_a_flag_and_a_command(capsys, tmp_path):
    main(["completion", "bash"])
    script = tmp_path / "vramplan.bash"
    script.write_text(capsys.readouterr().out)
    probe = (f"source {script}; COMP_WORDS=(vramplan fit --gradient-ch); COMP_CWORD=2; _vramplan; "
             'echo "${COMPREPLY[@]}"; COMP_WORDS=(vramplan swe); COMP_CWORD=1; _vramplan; echo "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.split() == ["--gradient-checkpointing"] and second == "sweep"
