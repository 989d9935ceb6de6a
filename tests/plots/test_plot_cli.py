"""`vramplan plot` and `vramplan report`: files written by extension, one-line errors with exit 2."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from _plot_data import png_size

from vramplan.cli.main import main

SMALL_MATRIX = ["--models", "1b,7b", "--gpus", "t4,a100"]


def plot(tmp_path, name, *args):
    out = tmp_path / name
    assert main(["plot", *args, "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data
    return data


@pytest.mark.parametrize("kind, args", [
    ("breakdown", ["--model", "7b", "--gpu", "t4"]),
    ("fit-matrix", SMALL_MATRIX),
    ("max-seq", ["--model", "7b", "--gpus", "t4,a100", "--batches", "1,4"]),
    ("seq-components", ["--model", "1b", "--gpu", "t4", "--points", "8"]),
    ("gpus-by-strategy", ["--model", "7b", "--gpu", "a100-40g", "--counts", "1,2", "--host-ram", "unknown"]),
])
def test_every_plot_kind_writes_png_svg_and_pdf(tmp_path, kind, args):
    assert plot(tmp_path, "a.png", kind, *args)[:4] == b"\x89PNG"
    assert b"<svg" in plot(tmp_path, "a.svg", kind, *args)[:2000]
    assert plot(tmp_path, "a.pdf", kind, *args)[:5] == b"%PDF-"


def test_validation_plot_from_synthetic_results(tmp_path, synthetic_results):
    data = plot(tmp_path, "v.png", "validation", "--results", str(synthetic_results))
    assert png_size(data)[0] > 0


def test_fit_matrix_image_grows_with_the_grid(tmp_path):
    small = plot(tmp_path, "small.png", "fit-matrix", *SMALL_MATRIX)
    large = plot(tmp_path, "large.png", "fit-matrix", "--models", "1b,3b,7b,13b", "--gpus", "t4,3090,4090,a100,h100")
    (small_w, small_h), (large_w, large_h) = png_size(small), png_size(large)
    assert large_w > small_w and large_h > small_h


def test_plot_content_changes_with_the_input(tmp_path):
    short = plot(tmp_path, "short.png", "breakdown", "--model", "13b", "--gpu", "t4", "--seq", "512")
    long = plot(tmp_path, "long.png", "breakdown", "--model", "13b", "--gpu", "t4", "--seq", "4096")
    assert short != long
    again = plot(tmp_path, "again.png", "breakdown", "--model", "13b", "--gpu", "t4", "--seq", "512")
    assert again == short  # same input, same image


@pytest.mark.parametrize("argv, message", [
    (["plot", "pie", "--out", "{tmp}/x.png"], "invalid choice: 'pie'"),
    (["plot", "breakdown", "--out", "{tmp}/x.jpg"], "--out: unknown file type '.jpg'"),
    (["plot", "breakdown", "--out", "{tmp}/x"], "--out: unknown file type no extension"),
    (["plot", "breakdown", "--out", "{tmp}/missing/x.png"], "--out: folder .* does not exist"),
    (["plot", "breakdown", "--out", "/proc/x.png"], "--out: cannot write '/proc/x.png'"),
    (["plot", "fit-matrix", "--models", "7b,nosuchmodel", "--out", "{tmp}/x.png"], "nosuchmodel"),
    (["plot", "max-seq", "--batches", "1,zero", "--out", "{tmp}/x.png"], "--batches"),
    (["plot", "seq-components", "--seq-min", "512", "--seq-max", "256", "--out", "{tmp}/x.png"], "--seq-max"),
    (["plot", "validation", "--results", "{tmp}", "--out", "{tmp}/x.png"], "no validation CSV files"),
    (["report", "--out", "{tmp}/r.txt"], "--out: unknown file type '.txt'"),
    (["report", "--out", "{tmp}/missing/r.html"], "--out: folder .* does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not any(tmp_path.rglob("x.*"))


def test_plot_errors_from_a_real_process_have_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "plot", "breakdown", "--out", "/proc/x.png"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --out: cannot write '/proc/x.png': No such file or directory"]


# --- report ----------------------------------------------------------------------------------

def test_html_report_is_self_contained(tmp_path, capsys):
    out = tmp_path / "plan.html"
    assert main(["report", "--model", "13b", "--gpu", "t4", "--seq", "4096", "--batch", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert list(tmp_path.iterdir()) == [out]
    assert text.count('src="data:image/png;base64,') == 3
    assert not re.search(r'src="(?!data:)', text)  # nothing linked from outside
    assert "DOES NOT FIT" in text and "To make it fit" in text
    assert "vramplan fit --model 13b --gpu t4 --batch 2 --seq 4096" in text
    assert "activations" in text and "<table>" in text


def test_markdown_report_writes_its_pngs_beside_it(tmp_path):
    out = tmp_path / "plan.md"
    assert main(["report", "--model", "1b", "--gpu", "a100", "--out", str(out)]) == 0
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 3
    for link in links:
        assert (tmp_path / link).read_bytes()[:4] == b"\x89PNG"
    assert "FITS" in text and "Room to spare" in text and "| component | GiB | share |" in text


def test_report_content_follows_the_run_flags(tmp_path):
    from vramplan.estimate import make_run
    from vramplan.present import command_line

    run = make_run(method="lora", seq_len=2048, gradient_checkpointing=False, lora_targets="q_proj,v_proj")
    assert command_line("7b", "a100", run) == (
        "vramplan fit --model 7b --gpu a100 --method lora --targets q_proj,v_proj --seq 2048 "
        "--no-gradient-checkpointing")
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    main(["report", "--model", "7b", "--gpu", "a100", "--out", str(first)])
    main(["report", "--model", "7b", "--gpu", "a100", "--method", "lora", "--out", str(second)])
    assert "--method lora" in second.read_text() and "--method" not in first.read_text()
