#!/usr/bin/env bash
# The Python 3.13 check, by hand (not part of .ci/run): build a venv with Python 3.13, torch and
# nocompile installed editable with its test extra (the C extension built with the machine's C
# compiler), then run a core subset of the tests. Run it from anywhere a python3.13 exists:
#
#     bash scripts/py313_check.sh                 # core subset (about 4 min on 2 cores)
#     bash scripts/py313_check.sh tests -x        # other pytest arguments instead of the subset
#
# Environment:
#   PY313            the interpreter (default: python3.13 on PATH, else pyenv's newest 3.13)
#   VENV313          the venv's folder (default: .venv313 in the checkout; reused if present)
#   TORCH_SPEC       what to install for torch (default: torch==2.13.0, the release CI pins)
#   TORCH_INDEX_URL  a pip index to take torch from, e.g. PyTorch's own CPU wheel index; without
#                    it PyPI's torch for cp313 is its CUDA build (about 0.5 GB plus several GB of
#                    CUDA libraries), which runs the CPU tests all the same
# Record the result in docs/versions.md ("What ran where").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${PY313:-}" ]; then
    if command -v python3.13 >/dev/null 2>&1 && python3.13 -c '' >/dev/null 2>&1; then
        PY313=python3.13
    elif command -v pyenv >/dev/null 2>&1; then
        PY313="$(ls -d "$(pyenv root)"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n 1)"
    fi
fi
if [ -z "${PY313:-}" ] || ! "$PY313" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    echo "py313_check: no Python 3.13 found (set PY313)" >&2
    exit 2
fi
VENV313="${VENV313:-.venv313}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
pip_install() {
    "$VENV313/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

start=$SECONDS
echo "== py313_check: $("$PY313" --version) ($PY313), venv $VENV313" >&2
if [ ! -x "$VENV313/bin/python" ]; then
    "$PY313" -m venv "$VENV313"
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip_install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
else
    pip_install "$TORCH_SPEC"
fi
echo "== py313_check: torch $("$VENV313/bin/python" -c 'import torch; print(torch.__version__)') installed ($((SECONDS - start)) s)" >&2
pip_install -e ".[test]"
echo "== py313_check: nocompile installed editable ($((SECONDS - start)) s)" >&2

if [ "$#" -eq 0 ]; then
    set -- tests/test_functions.py tests/test_watch.py tests/test_native.py tests/test_modules.py \
        tests/test_inputs_policy.py tests/test_object_arguments.py
fi
# The C extension must build and import here; it is not used on 3.13 (no dict version tags:
# nocompile._compat.DICT_VERSION is None), so NOCOMPILE_EXPECT_NATIVE stays unset and
# tests/test_native.py skips its C tests.
"$VENV313/bin/python" -c 'import nocompile._native as n; print("== py313_check: C extension", n.__file__)' >&2
tests_start=$SECONDS
set +e
"$VENV313/bin/python" -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
echo "== py313_check: pytest exit $status, tests $((SECONDS - tests_start)) s, total $((SECONDS - start)) s" >&2
if [ "$status" -eq 5 ]; then
    echo "py313_check: pytest collected no tests: treating that as a failure" >&2
    exit 1
fi
exit "$status"
