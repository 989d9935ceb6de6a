"""`vramplan validate`: measured against predicted memory on a real GPU, and the report.

    vramplan validate run [--only TERM] [--out CSV] [--budget-s S]   # the matrix, on CUDA
    vramplan validate run --smoke                                    # CPU smoke run, nothing measured
    vramplan validate report [PATHS...] [--markdown]                 # accuracy tables
    vramplan validate published [PATHS...] [--json] [--markdown]     # published measurements vs the plan
                                                                     # (one GPU, then multi-GPU via plan_ranks)

The harness lives in the source tree's `validation/` folder (not in the wheel); torch is
imported only when a run starts.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from vramplan.errors import InputError
from vramplan.extras import require_extra

HELP = "run the GPU validation matrix (measured vs predicted) or print its accuracy report"
EPILOG = """examples:
  vramplan validate run --list                       # the matrix and each case's prediction
  vramplan validate run --out results.csv --budget-s 420
  vramplan validate run --smoke                      # CPU: every harness path, nothing measured
  vramplan validate report                           # all of validation/results/*.csv
  vramplan validate report my-results.csv --markdown
  vramplan validate published                        # the corpus in validation/published/ vs the planner
see validation/README.md for running the matrix on a lent GPU"""

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def validation_module(name: str):
    """Import `validation.<name>` from the source checkout this vramplan runs from."""
    if not (SOURCE_ROOT / "validation" / "cases.py").is_file():
        raise InputError("validate", "needs a source checkout of vramplan (its validation/ folder); "
                                     "this install has none")
    if str(SOURCE_ROOT) not in sys.path:
        sys.path.insert(0, str(SOURCE_ROOT))
    return importlib.import_module(f"validation.{name}")


def add_parser(subparsers) -> None:
    from vramplan.cli.run_flags import bounded_int

    parser = subparsers.add_parser("validate", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="validate_command", metavar="ACTION", parser_class=type(parser))
    run_parser = actions.add_parser("run", help="run matrix cases on this machine's GPU (or --smoke on CPU)",
                                    description="Run validation cases and append measured vs predicted bytes "
                                                "to a results CSV.")
    add_run_arguments(run_parser)
    report = actions.add_parser("report", help="accuracy of the planner over recorded results",
                                description="Median and max error of the predicted peak per method and "
                                            "architecture, verdict agreement, layer scaling, worst cases.")
    report.add_argument("paths", nargs="*", type=Path,
                        help="results CSV files or folders (default: validation/results/)")
    report.add_argument("--markdown", action="store_true", help="Markdown tables (for the README)")
    report.add_argument("--worst", type=bounded_int("--worst", 0, 10_000), default=5, metavar="N", help="how many worst cases to list (default 5)")
    report.add_argument("--simulate", action="store_true",
                        help="also run the trace simulator on every measured case and show its error next to "
                             "the analytic model's (torch extra; seconds per case)")
    published = actions.add_parser("published", help="published measurements (papers, READMEs, issues) vs the planner",
                                   description="Each entry of validation/published/*.toml against the planner's "
                                               "matching quantity; median and max error, verdict agreement, worst. "
                                               "Then the multi-GPU entries (validation/published/multigpu/) against "
                                               "plan_ranks: the printed (or worst) rank's peak, and host RAM apart.")
    published.add_argument("paths", nargs="*", type=Path,
                           help="corpus TOML files or folders (default: validation/published/ and its multigpu/; "
                                "entries with a parallel table go to the multi-GPU section)")
    published.add_argument("--json", action="store_true", help="machine-readable output")
    published.add_argument("--markdown", action="store_true", help="Markdown table (for the README)")
    published.add_argument("--worst", type=bounded_int("--worst", 0, 10_000), default=5, metavar="N",
                           help="how many worst entries to list (default 5)")
    published.add_argument("--default-stack", action="store_true",
                           help="plan every entry with the current releases and no recipe, not the entry's own stack")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `vramplan validate run`, shared with validation/run_matrix.py."""
    parser.add_argument("--out", type=Path, default=None,
                        help="results CSV to append to, or a folder for <date>-<device>.csv in it "
                             "(default on a GPU: validation/results/<date>-<device>.csv)")
    parser.add_argument("--matrix", type=Path, default=None, help="matrix TOML (default: validation/matrix.toml)")
    parser.add_argument("--only", action="append", default=[], metavar="TERM",
                        help="only cases matching TERM: an id substring or key=value (method=qlora, layers=4); repeatable")
    parser.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                        help="stop starting new cases when the next might end after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run on a tiny model; nothing measured")
    parser.add_argument("--list", action="store_true", help="list the selected cases and their predictions, run nothing")
    parser.add_argument("--resume", action="store_true",
                        help="skip the cases that already have a row in --out (after a CUDA error or a crash)")


def run(args) -> int:
    if args.validate_command == "run":
        if not args.list:
            require_extra("validate", "validate run")
        runner = validation_module("runner")
        if args.matrix is None:
            args.matrix = validation_module("cases").MATRIX_PATH
        return runner.run_from_args(args, lambda text: print(text, flush=True))
    if args.validate_command == "report":
        return _report(args)
    if args.validate_command == "published":
        return _published(args)
    print("usage: vramplan validate {run,report,published} ... (see vramplan validate --help)", file=sys.stderr)
    return 2


def _report(args) -> int:
    results = validation_module("results")
    report = validation_module("report")
    if args.worst < 0:
        raise InputError("--worst", f"must be 0 or more (got {args.worst})")
    paths = args.paths or [results.RESULTS_DIR]
    rows = results.read_rows(paths) if args.paths or results.RESULTS_DIR.is_dir() else []
    if not rows:
        where = ", ".join(str(p) for p in paths)
        print(f"no results in {where}: run `vramplan validate run` on a GPU machine first (validation/README.md)")
        return 1
    summary = report.summarize(rows, worst=args.worst)
    print(report.render_markdown(summary) if args.markdown else report.render_text(summary))
    if args.simulate:
        require_extra("torch", "--simulate")
        from vramplan.results_files import csv_files
        from vramplan.simulate import compare_with_results

        compared = [row for file in csv_files(paths) for row in compare_with_results(file)]
        print()
        print(report.render_simulator(report.simulator_rows(compared), markdown=args.markdown))
    return 0


def _published(args) -> int:
    import json

    published = validation_module("published")
    multigpu = validation_module("published_multigpu")
    if args.paths:
        entries = published.read_corpus(args.paths)
        single = [entry for entry in entries if entry.parallel is None]
        multi = [entry for entry in entries if entry.parallel is not None]
    else:
        single, multi = published.read_corpus(), published.read_multigpu_corpus()
    summary = published.summarize([published.compare(entry, default_stack=args.default_stack) for entry in single],
                                  worst=args.worst)
    ranks = multigpu.summarize_multigpu(multigpu.compare_all(multi, default_stack=args.default_stack), worst=args.worst)
    if args.json:
        data = published.to_json(summary) if single else {}
        print(json.dumps({**data, "multi_gpu": multigpu.to_json(ranks)} if multi else data, indent=2))
        return 0
    render, render_ranks = ((published.render_markdown, multigpu.render_markdown) if args.markdown
                            else (published.render_text, multigpu.render_text))
    sections = ([render(summary)] if single else []) + (["multi-GPU (plan_ranks per rank and host):\n"
                                                          + render_ranks(ranks)] if multi else [])
    print("\n\n".join(sections))
    return 0
