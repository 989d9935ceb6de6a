"""The script the GPU session runs: the validation matrix, measured against predicted.

    python3 validation/run_matrix.py --out $OUT/results.csv --budget-s 420
    python3 validation/run_matrix.py --only method=qlora --only llama-3.1 --out $OUT/results.csv
    python3 validation/run_matrix.py --smoke          # CPU, tiny model, nothing measured

See validation/README.md for the one-call device command and how results are read.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from validation.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
