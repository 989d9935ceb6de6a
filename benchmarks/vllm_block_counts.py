"""Published vLLM start-up logs against vramplan's vLLM rules: the README's "vLLM block counts" table.

Reads validation/published/serving/vllm_startup.toml and prints one Markdown row per check (printed value, what the
rules reproduce, exact / within rounding / differs, and why), then the counts.

    python benchmarks/vllm_block_counts.py
"""
from __future__ import annotations

import collections
import sys

from vramplan.serve.vllm_published import all_checks, load_runs


def main() -> int:
    urls = {run["id"]: (run["url"], run["vllm_version"], run["model"], run["gpu"]) for run in load_runs()}
    print("| log | vLLM | model, GPU | check | printed | reproduced | result |")
    print("|---|---|---|---|---|---|---|")
    checks = all_checks()
    for check in checks:
        url, version, model, gpu = urls[check.run_id]
        number = url.rstrip("/").rsplit("/", 1)[-1]
        result = check.status + (f": {check.why}" if check.why else "")
        print(f"| [#{number}]({url}) | {version} | {model}, {gpu} | {check.what} | {check.printed} | "
              f"{check.reproduced} | {result} |")
    counts = collections.Counter(check.status for check in checks)
    print(f"\n{len(checks)} checks: " + ", ".join(f"{counts[s]} {s}" for s in ("exact", "within rounding", "differs")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
