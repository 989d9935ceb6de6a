"""Run a list of cases, append each row as soon as it is measured, stop cleanly before a
deadline, and print progress (flushed) and the accuracy table at the end.

Cases run in `cases.run_order` (one per architecture and method, then the capped cases, then
the variants), so a run cut short keeps the most informative rows. After a CUDA error other
than OOM the process stops with exit code 3 (its CUDA context is unusable); `--resume` in a
fresh process skips every case already in the output file. A case that was running when its
process died (crash, kill) is recorded once as an error and never retried: `<out>.running`
names it while it runs.

Used by `validation/run_matrix.py` (the GPU session's script) and `vramplan validate`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from validation import cases as case_data
from validation import results
from vramplan.cli.validate import add_run_arguments
from vramplan.errors import InputError

GIB = 2**30
EXIT_CUDA_ERROR = 3  # the session script resumes in a fresh process (validation/gpu_session.sh)


def _gib(value) -> str:
    return "-" if value in (None, "") else f"{int(value) / GIB:6.2f}"


def progress_line(index: int, total: int, row: dict) -> str:
    from validation.report import peak_error

    error = peak_error(row)
    fits = row.get("predicted_fits")
    parts = [
        f"[{index:>3}/{total}] {row['case_id']:<44} {row['status']:<12}",
        f"measured {_gib(row.get('measured_peak_bytes'))} GiB  predicted {_gib(row.get('predicted_peak_bytes'))} GiB",
        f"{error:+6.1f}%" if error == error else "      -",
        f"planner {'fits' if fits else 'no-fit' if fits is not None else '-'}",
        f"{row.get('seconds', 0) or 0:5.1f} s",
    ]
    line = "  ".join(parts)
    if row.get("error"):
        line += f"\n          {row['error']}"
    return line


def running_marker(out: Path) -> Path:
    """The file naming the case in progress, beside the results file."""
    return out.with_name(out.name + ".running")


def record_died_case(selected: list, out: Path, device: str, env: dict, echo=print) -> None:
    """If the last process died inside a case (its marker is left and it has no row), record that
    case once as an error so that resuming never runs it again."""
    import torch

    from validation.harness import planned_row

    marker = running_marker(out)
    if not marker.exists():
        return
    case_id = marker.read_text(encoding="utf-8").strip()
    marker.unlink()
    case = next((c for c in selected if c.case_id == case_id), None)
    if case is None or case_id in results.done_case_ids(out):
        return
    row, _ = planned_row(case, torch.device(device), env)
    row.update(status="error", error="the process ended during this case (crash or kill); not retried")
    results.append_row(out, row)
    echo(f"resume: {case_id} was running when the last process ended; recorded as an error, not retried")


def run_cases(selected: list, out: Path | None, device: str, budget_s: float | None = None,
              echo=print, resume: bool = False) -> list[dict]:
    """Run `selected` in order; rows are appended to `out` (if given) one by one. With `resume`,
    cases that already have a row in `out` are skipped. Stops after a CUDA error (see module doc)."""
    import torch

    from validation.harness import is_cuda_error, planned_row, run_case

    started = time.perf_counter()
    env = results.environment(device)
    echo(f"device: {env['device_name']} ({env['device_total_bytes'] or '-'} bytes), driver {env['driver'] or '-'}, "
         f"torch {env['torch']}, triton {env['triton'] or '-'}, transformers {env['transformers'] or '-'}, "
         f"peft {env['peft'] or '-'}, bitsandbytes {env['bitsandbytes'] or '-'}")
    if resume and out is not None:
        record_died_case(selected, out, device, env, echo)
        done = results.done_case_ids(out)
        if done:
            echo(f"resume: {len(done)} case(s) already in {out}, skipped")
        selected = [case for case in selected if case.case_id not in done]
    echo(f"{len(selected)} case(s); results -> {out or '(not written)'}"
         + (f"; budget {budget_s:.0f} s" if budget_s else ""))
    rows, slowest = [], 5.0
    for index, case in enumerate(selected, start=1):
        elapsed = time.perf_counter() - started
        if budget_s is not None and elapsed + slowest > budget_s:
            left = [c.case_id for c in selected[index - 1:]]
            echo(f"budget: stopping after {elapsed:.0f} s; {len(left)} case(s) not run: {', '.join(left)}")
            break
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            running_marker(out).write_text(case.case_id + "\n", encoding="utf-8")
        try:
            row = run_case(case, torch.device(device), env)
        except Exception as exc:  # a CUDA error surfacing outside the case's own try (an async one)
            if not is_cuda_error(exc):
                raise
            row = {**planned_row(case, torch.device(device), env)[0], "status": "cuda_error",
                   "error": f"{type(exc).__name__}: {str(exc).strip()[:200]}"}
        slowest = max(slowest, float(row.get("seconds") or 0))
        if out is not None:
            results.append_row(out, row)
            running_marker(out).unlink(missing_ok=True)
        rows.append(row)
        echo(progress_line(index, len(selected), row))
        if row["status"] == "cuda_error":
            left = [c.case_id for c in selected[index:]]
            echo(f"CUDA error: this process cannot go on; {len(left)} case(s) left for a fresh process (--resume)")
            break
    echo(f"done: {len(rows)} case(s) in {time.perf_counter() - started:.0f} s")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="validation/run_matrix.py",
        description="Run the validation matrix on this machine's GPU and append measured vs predicted "
                    "memory to a results CSV (validation/README.md).")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    args.matrix = args.matrix or case_data.MATRIX_PATH
    return args


def selected_cases(args) -> list:
    chosen = case_data.smoke_cases() if args.smoke else case_data.run_order(case_data.load_matrix(args.matrix))
    chosen = case_data.select(chosen, args.only)
    if not chosen:
        raise InputError("--only", f"no case matches {' and '.join(args.only)}")
    return chosen


def list_cases(chosen: list, echo=print) -> None:
    """Every case in the order it runs, with its prediction; a capped case shows its cap and
    required / capacity (the same on any card)."""
    for index, case in enumerate(chosen, start=1):
        prediction = case_data.predict(case)
        cap = (f" cap {case.memory_cap_bytes / GIB:5.2f} GiB + context: needs {prediction.required_over_capacity:.2f}x"
               if case.memory_cap_bytes else "")
        echo(f"{index:>3} {case.case_id:<46} {case.run.method:<9} predicted {prediction.peak_bytes / GIB:6.2f} GiB "
             f"({prediction.peak_phase}){cap} {'fits' if prediction.fits else 'does not fit'}")


def run_from_args(args, echo=print) -> int:
    """The shared body of `run_matrix.py` and `vramplan validate run`."""
    chosen = selected_cases(args)
    if args.list:
        list_cases(chosen, echo)
        return 0
    import torch

    if args.smoke:
        device = "cpu"
        if args.out is not None and results.RESULTS_DIR in args.out.resolve().parents:
            raise InputError("--out", "smoke rows measure nothing: keep them out of validation/results/")
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        raise InputError("--smoke", "no CUDA GPU here: run on the GPU machine (validation/README.md), "
                                    "or add --smoke for the CPU smoke run")
    out = args.out
    if device == "cuda" and (out is None or out.is_dir()):
        name = results.default_results_path(torch.cuda.get_device_name(0)).name
        out = (out or results.RESULTS_DIR) / name
    rows = run_cases(chosen, out, device, args.budget_s, echo, resume=args.resume)
    if device == "cuda" and rows:
        from validation.report import render_text, summarize

        echo("")
        echo(render_text(summarize(rows)))
    if rows and rows[-1]["status"] == "cuda_error":
        return EXIT_CUDA_ERROR
    failed = [row for row in rows if row["status"] == "error"]
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parse_args(argv)

    def echo(text: str) -> None:
        print(text, flush=True)

    try:
        return run_from_args(args, echo)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:
        return 0
