#!/usr/bin/env bash
# Everything only a GPU can show, in one device call (see validation/README.md):
#   device run: command "bash validation/gpu_session.sh", carry ["validation/wheels"], timeout_s 600
# 1. the validation matrix (measured vs predicted, OOMs recorded), stopped cleanly by a budget;
# 2. the NF4 dequant benchmark against bitsandbytes' CUDA dequant and the copy roofline;
# 3. the fused NF4 matmul against dequant-then-matmul, if time is left.
# Every output lands in $OUT (results CSV, benchmark JSON, logs); copy them unchanged into
# validation/results/. Budgets in seconds can be overridden: MATRIX_S, DEQUANT_S, MATMUL_S.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
start=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    validation/wheels/*.whl || { echo "wheels missing: run validation/fetch_wheels.sh here first"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

python3 validation/run_matrix.py --out "$OUT/" --budget-s "${MATRIX_S:-390}" 2>&1 | tee "$OUT/matrix_log.txt"
echo "matrix done at $((SECONDS - start)) s"

timeout "${DEQUANT_S:-90}" python3 benchmarks/nf4_dequant.py --section dequant --out "$OUT/nf4_dequant.json" \
    2>&1 | tee "$OUT/nf4_dequant_log.txt"
echo "dequant benchmark done at $((SECONDS - start)) s"

left=$((560 - (SECONDS - start)))
if [ "$left" -gt 60 ]; then
    timeout "$(( left < ${MATMUL_S:-240} ? left : ${MATMUL_S:-240} ))" \
        python3 benchmarks/nf4_dequant.py --section matmul --out "$OUT/nf4_matmul.json" 2>&1 | tee "$OUT/nf4_matmul_log.txt"
else
    echo "no time left for the matmul section (run it alone: --section matmul)"
fi
echo "gpu session done at $((SECONDS - start)) s"
