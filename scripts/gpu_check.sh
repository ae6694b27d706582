#!/usr/bin/env bash
# One command on a CUDA machine, in groups of steps (STEPS, comma-separated; default graphs):
#
#   bash scripts/gpu_check.sh                   # graphs: the CUDA-graph tests, then the bench at the reference sizes
#   STEPS=warmstart bash scripts/gpu_check.sh   # the warm start (issue #27): the CUDA kernels test, bench-cache
#                                               # on the 8-layer width-256 reference (cold, warm, warm on an empty
#                                               # inductor/Triton cache, stock warm, stock with its mega-cache)
#   STEPS=warmstart-llama bash scripts/gpu_check.sh   # bench-cache on a tiny Hugging Face Llama decode step
#   PYTHON=/path/to/python bash scripts/gpu_check.sh
#   DRY_RUN=1 STEPS=warmstart bash scripts/gpu_check.sh   # print the steps' commands, run nothing
#
# Uses the tree as is (PYTHONPATH), so nocompile need not be installed; needs torch with CUDA
# and pytest. Every step has a timeout; each group stays under 7 min 50 s even in the worst
# case (graphs typically 3-4 min, warmstart 3-5). Output also goes to $OUT (if set) as gpu_check.txt.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${STEPS:-graphs}
DRY_RUN=${DRY_RUN:-}
for group in ${STEPS//,/ }; do
  case "$group" in
    graphs | warmstart | warmstart-llama) ;;
    *)
      echo "gpu_check: STEPS takes graphs, warmstart, warmstart-llama (comma-separated), got '$group'" >&2
      exit 2
      ;;
  esac
done
wants() { [[ ",$STEPS," == *",$1,"* ]]; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG=${OUT:-/tmp}/gpu_check.txt
: > "$LOG"
status=0

step() {  # step SECONDS LABEL COMMAND...
  local limit=$1 label=$2
  shift 2
  if [ -n "$DRY_RUN" ]; then
    printf 'step %s %s:' "$limit" "$label"
    printf ' %q' "$@"
    echo
    return
  fi
  echo "=== $label (timeout ${limit}s) ===" | tee -a "$LOG"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $label: rc=$rc, $((SECONDS - started)) s ===" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

step 20 "environment" "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"
if [ -z "$DRY_RUN" ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY; the GPU tests would only skip. Stopping." | tee -a "$LOG"
  exit 2
fi
if wants graphs; then
  # TESTS=tests TESTS_TIMEOUT=300 runs the whole suite instead (the version-matrix check).
  step "${TESTS_TIMEOUT:-110}" "GPU tests" "$PY" -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_cudagraphs.py tests/test_cudagraphs_options.py}
  step 40 "example" "$PY" examples/cuda_graphs.py
  step 100 "bench width 256, 8 layers, batch 1, float32" "$PY" -m nocompile bench --device cuda --rows graphs --rounds 5 --width 256 --layers 8 --batch 1 --dtype float32
  step 80 "bench width 256, 8 layers, batch 1, bfloat16" "$PY" -m nocompile bench --device cuda --rows graphs --rounds 5 --width 256 --layers 8 --batch 1 --dtype bfloat16
  step 120 "bench width 1024, 32 layers, batch 1, float32" "$PY" -m nocompile bench --device cuda --rows graphs --rounds 5 --width 1024 --layers 32 --batch 1 --dtype float32
fi
if wants warmstart; then
  # A warm start on empty inductor and Triton caches compiles nothing (torch's compile counters and
  # inductor's cache counters stay zero), on CUDA; then the CPU one of the same file for comparison.
  step 150 "warm-start kernels test, CUDA" "$PY" -m pytest -q -p no:cacheprovider -k "cuda_load or warm_load" tests/test_kernels.py
  step 330 "bench-cache, 8 layers, width 256, CUDA" "$PY" -m nocompile bench-cache --device cuda --width 256 --layers 8 --rounds 3
fi
if wants warmstart-llama; then
  step 420 "bench-cache, tiny Llama decode step, CUDA" "$PY" -m nocompile bench-cache --device cuda --models llama --rounds 3
fi
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEP FAILED), log in $LOG"
exit $status
