#!/usr/bin/env bash
# Everything only a GPU can show, in one device call (see validation/README.md):
#   device run: command "bash validation/gpu_session.sh", carry ["validation/wheels"], timeout_s 540
# 1. the validation matrix (measured vs predicted, OOMs recorded): the most informative cases first
#    (one per architecture and method, then the capped cases, then variants), each row written as
#    soon as it is measured; under a timeout; after a CUDA error or a crash it resumes in a fresh
#    process, skipping what is done (validation/runner.py);
# 2. the NF4 dequant benchmark: the kernel on bitsandbytes' own quantized data, the copy roofline,
#    the quantizer's agreement with bitsandbytes as a figure; JSON rewritten after every row;
# 3. the fused NF4 matmul against dequant-then-matmul, if time is left.
# Every output lands in $OUT (results CSV, benchmark JSON, logs); copy them unchanged into
# validation/results/. Seconds can be overridden: SESSION_S (whole script), MATRIX_S, DEQUANT_S,
# MATMUL_S; ONLY="TERM ..." passes --only TERM to the matrix.
#
#   bash validation/gpu_session.sh --smoke   # CPU: every step on tiny shapes, nothing measured
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
start=$SECONDS
SESSION_S=${SESSION_S:-525}
MATRIX_S=${MATRIX_S:-360}
elapsed() { echo $((SECONDS - start)); }

if [ "$SMOKE" = 0 ] && ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no CUDA GPU here: this script measures on the lent GPU (validation/README.md)."
    echo "On CPU, 'bash validation/gpu_session.sh --smoke' runs every step on tiny shapes (nothing measured)."
    exit 2
fi
mkdir -p "$OUT"

# The wheels are for the GPU image (CPython 3.12, x86-64). There: install them. In smoke mode
# on another Python: only check that pip would take every one of them for that image.
wheels=(validation/wheels/*.whl)
image_tags=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
if [ ! -e "${wheels[0]}" ]; then
    if [ "$SMOKE" = 0 ]; then echo "wheels missing: run validation/fetch_wheels.sh here first"; exit 1; fi
    echo "smoke: no validation/wheels (validation/fetch_wheels.sh); using this machine's packages"
elif [ "$SMOKE" = 1 ]; then
    check=$(mktemp -d)
    python3 -m pip install -q --dry-run --no-index --no-deps --only-binary=:all: "${image_tags[@]}" --target "$check" \
        "${wheels[@]}" || { echo "smoke: a wheel in validation/wheels does not fit the GPU image"; exit 1; }
    rmdir "$check"
    echo "smoke: ${#wheels[@]} wheels fit the GPU image (cp312, x86-64); using this machine's packages"
else
    site=${SITE:-/tmp/site}
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "${wheels[@]}" || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=$site:$PWD
fi

if [ "$SMOKE" = 0 ]; then
    # at most 8 files come back from $OUT: the GPU line goes into the matrix log
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/matrix_log.txt"
    matrix_args=(--out "$OUT/")
    bench_args=()
else
    matrix_args=(--smoke --out "$OUT/smoke.csv")
    bench_args=(--smoke)
fi
for term in ${ONLY:-${SMOKE_ONLY:-}}; do matrix_args+=(--only "$term"); done

# The matrix: each try gets what is left of MATRIX_S; a process that ends with a CUDA error (3)
# or dies is followed by a fresh one that resumes (the case it died in is recorded, not retried).
tries=0
while :; do
    left=$((MATRIX_S - $(elapsed)))
    if [ "$left" -lt 45 ]; then echo "matrix: no time left for another try ($left s)"; break; fi
    # the budget stops starting cases; the timeout (30 s later: imports, the last case) stops a hang
    timeout -k 10 "$left" python3 validation/run_matrix.py "${matrix_args[@]}" --resume --budget-s $((left - 30)) \
        2>&1 | tee -a "$OUT/matrix_log.txt"
    rc=${PIPESTATUS[0]}
    case $rc in
        0 | 1) break ;;  # done (1: some cases are error rows, recorded)
        2) echo "matrix: refused its input (see above)"; break ;;
        124 | 137) echo "matrix: stopped by its timeout at $(elapsed) s; the rows written so far are kept"; break ;;
    esac
    tries=$((tries + 1))
    if [ "$tries" -gt 3 ]; then echo "matrix: ended $tries times; giving up"; break; fi
    echo "matrix: process ended with $rc (CUDA error or crash) at $(elapsed) s; resuming in a fresh process"
done
echo "matrix done at $(elapsed) s"

# benchmark_section SECTION SECONDS SMALLEST: one section of benchmarks/nf4_dequant.py in what is left of
# the session (at most SECONDS, skipped under SMALLEST), its figures in $OUT/nf4_SECTION.json.
benchmark_section() {
    local section=$1 budget=$2 smallest=$3 left=$((SESSION_S - $(elapsed)))
    [ "$left" -lt "$budget" ] && budget=$left
    if [ "$budget" -gt "$smallest" ]; then
        timeout -k 5 "$budget" python3 benchmarks/nf4_dequant.py "${bench_args[@]}" --section "$section" \
            --out "$OUT/nf4_$section.json" 2>&1 | tee "$OUT/nf4_${section}_log.txt"
        echo "$section benchmark done at $(elapsed) s (exit ${PIPESTATUS[0]})"
    else
        echo "no time left for the $section section (run it alone: benchmarks/nf4_dequant.py --section $section)"
    fi
}
benchmark_section dequant "${DEQUANT_S:-60}" 20
benchmark_section matmul "${MATMUL_S:-240}" 60
ls -l "$OUT"
echo "gpu session done at $(elapsed) s"
