#!/usr/bin/env bash
# The GPU check, on a machine with one CUDA GPU, in under 8 minutes: the tests marked `gpu`, then bench/gpu.py (7B-width
# prune and evaluate stages: wall time, peak GPU memory, peak host RSS, device, versions) and bench/sparsegpt_layer.py
# (SparseGPT's Gram and column loop on one 7B-shape layer, each beside its baseline), into --out (default
# reports/bench): gpu_tests.log, gpu.md, gpu.csv, gpu.json, sparsegpt_layer.md, sparsegpt_layer.json.
#
#   bash bench/gpu_check.sh [--out DIR] [--blocks N]      # with the project's environment (make setup) on the GPU machine
#   bash bench/gpu_check.sh --fetch-wheels DIR [--python-version 3.12]
#       on a machine with internet: the wheels the check needs beyond a CUDA image with torch and pytest, at this
#       environment's versions, for the GPU machine's Python (default: this one's) on x86-64 Linux (bench/gpu_wheels.py
#       lists them: transformers, lm_eval and what they import)
#   bash bench/gpu_check.sh --wheels DIR [--out DIR]      # on a GPU machine without internet: install those first
#
# The interpreter is $PYTHON, else .venv/bin/python, else python3. Without a CUDA GPU it says so and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=reports/bench BLOCKS=4 WHEELS="" FETCH="" PYTHON_VERSION=""
TEST_FILES=(tests/test_gpu.py tests/test_scoring.py)  # every file holding tests marked gpu
fail() { echo "gpu_check: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --blocks) BLOCKS=$2; shift 2 ;;
        --wheels) WHEELS=$2; shift 2 ;;
        --fetch-wheels) FETCH=$2; shift 2 ;;
        --python-version) PYTHON_VERSION=$2; shift 2 ;;
        *) fail "unknown argument '$1'; usage: bench/gpu_check.sh [--out DIR] [--blocks N] [--wheels DIR]" \
                "| --fetch-wheels DIR [--python-version X.Y]" ;;
    esac
done

if [ -n "$FETCH" ]; then
    requirements=$(PYTHONPATH=$PWD/src "$PYTHON" bench/gpu_wheels.py)
    version=${PYTHON_VERSION:-$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
    platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    # shellcheck disable=SC2086  # one word per requirement
    exec "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version "$version" "${platforms[@]}" --dest "$FETCH" $requirements
fi

"$PYTHON" -c 'import torch' 2>/dev/null || fail "$PYTHON has no torch: run 'make setup' on this machine or set PYTHON"
"$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' ||
    fail "no CUDA GPU visible to torch (torch.cuda.is_available() is False): this check needs one; nothing was run"

export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
if [ -n "$WHEELS" ]; then
    site=${TMPDIR:-/tmp}/prunescope-gpu-site
    compgen -G "$WHEELS/*.whl" >/dev/null || fail "--wheels $WHEELS holds no .whl file (make them with --fetch-wheels)"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$WHEELS"/*.whl
    PYTHONPATH=$site:$PYTHONPATH
fi
missing=$("$PYTHON" -c 'import prunescope.pruning, prunescope.evaluation.scoring, lm_eval.models.huggingface, pytest' \
    2>&1 | tail -n 1) || fail "$missing; install the project (make setup) or pass --wheels DIR (see --fetch-wheels)"

mkdir -p "$OUT"
rm -f "$OUT"/gpu.md "$OUT"/gpu.csv "$OUT"/gpu.json "$OUT"/sparsegpt_layer.*  # this run's figures replace the last ones, even if cut short
start=$SECONDS
echo "gpu_check: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__, "CUDA", torch.version.cuda)')"
tests=0 bench=0
timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu "${TEST_FILES[@]}" >"$OUT/gpu_tests.log" 2>&1 || tests=$?
tail -n 15 "$OUT/gpu_tests.log"
echo "gpu_check: tests marked gpu exited $tests after $((SECONDS - start)) s (log: $OUT/gpu_tests.log)"
timeout 270 "$PYTHON" bench/gpu.py --device cuda --blocks "$BLOCKS" --out "$OUT" || bench=$?
[ -f "$OUT/gpu.md" ] && cat "$OUT/gpu.md"  # written after every step: what a cut-short run measured
echo "gpu_check: benchmark exited $bench after $((SECONDS - start)) s"
layer=0
timeout 100 "$PYTHON" bench/sparsegpt_layer.py --device cuda --out "$OUT" || layer=$?
echo "gpu_check: SparseGPT layer benchmark exited $layer; done in $((SECONDS - start)) s"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$layer" -eq 0 ]
