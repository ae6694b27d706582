#!/usr/bin/env bash
# One command on a CUDA machine: the CUDA-graph tests, then the bench at the reference sizes.
#
#   bash scripts/gpu_check.sh            # from the repository root (or anywhere: it cd's there)
#   PYTHON=/path/to/python bash scripts/gpu_check.sh
#
# Uses the tree as is (PYTHONPATH), so nocompile need not be installed; needs torch with CUDA
# and pytest. Every step has a timeout; together they stay under 7 min 50 s even in the
# worst case (typically 3-4). Output also goes to $OUT (if set) as gpu_check.txt.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG=${OUT:-/tmp}/gpu_check.txt
: > "$LOG"
status=0

step() {  # step SECONDS LABEL COMMAND...
  local limit=$1 label=$2
  shift 2
  echo "=== $label (timeout ${limit}s) ===" | tee -a "$LOG"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $label: rc=$rc, $((SECONDS - started)) s ===" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

step 20 "environment" "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY; the GPU tests would only skip. Stopping." | tee -a "$LOG"
  exit 2
fi
# TESTS=tests TESTS_TIMEOUT=300 runs the whole suite instead (the version-matrix check).
step "${TESTS_TIMEOUT:-110}" "GPU tests" "$PY" -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_cudagraphs.py tests/test_cudagraphs_options.py}
step 40 "example" "$PY" examples/cuda_graphs.py
step 100 "bench width 256, 8 layers, batch 1, float32" "$PY" -m nocompile bench --device cuda --rows graphs --rounds 5 --width 256 --layers 8 --batch 1 --dtype float32
step 80 "bench width 256, 8 layers, batch 1, bfloat16" "$PY" -m nocompile bench --device cuda --rows graphs --rounds 5 --width 256 --layers 8 --batch 1 --dtype bfloat16
step 120 "bench width 1024, 32 layers, batch 1, float32" "$PY" -m nocompile bench --device cuda --rows graphs --rounds 5 --width 1024 --layers 32 --batch 1 --dtype float32
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEP FAILED), log in $LOG"
exit $status
