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
set +e
TRITON_INTERPRET=1 "$PY" -m pytest -q --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests" >&2
fi
exit "$rc"
