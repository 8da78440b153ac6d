#!/usr/bin/env bash
# Lint, then the default test selection (everything not marked slow), with TRITON_INTERPRET=1 so that the
# Triton kernels are checked on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "[test] ruff"
.venv/bin/ruff check vidseg tests benchmarks
echo "[test] docstrings"; .venv/bin/python scripts/check_docstrings.py vidseg tests benchmarks
echo "[test] pytest"
# One pytest worker per core (pytest-xdist), each with one intra-op thread: most tests are small and
# Python-bound, so two workers finish far sooner than one worker with two threads. A file's tests stay on one
# worker (--dist loadfile): module fixtures and the docs commands, which build on each other in document
# order, then run once. VIDSEG_TEST_WORKERS=0 runs everything in this process.
workers="${VIDSEG_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
[ "$workers" -gt 4 ] && workers=4
xdist=()
if [ "$workers" -gt 1 ] && "$PY" -c "import xdist" 2>/dev/null; then
  xdist=(-n "$workers" --dist loadfile)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
set +e
TRITON_INTERPRET=1 "$PY" -m pytest -q --durations=15 "${xdist[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests" >&2
fi
exit "$rc"
