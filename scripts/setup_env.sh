#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install vidseg with its test tools.
#
# torch is installed FIRST and on its own, so that pip never resolves a bare "torch" requirement to the
# multi-GB CUDA wheels on a CPU-only machine:
#   1. a torch already importable in .venv is kept;
#   2. else, with VIDSEG_SYSTEM_TORCH=1 or when the base python already has torch, the venv is created with
#      --system-site-packages and that torch is kept;
#   3. else a local wheel is used when pip's configured find-links have one;
#   4. else, without an NVIDIA GPU, the CPU build from the PyTorch CPU index; with a GPU, the default build.
# Environment: PYTHON (default python3), VIDSEG_VENV (default .venv), VIDSEG_TORCH_VERSION (default 2.13.0),
# VIDSEG_EXTRAS (default dev).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VIDSEG_VENV:-.venv}"
TORCH_VERSION="${VIDSEG_TORCH_VERSION:-2.13.0}"
EXTRAS="${VIDSEG_EXTRAS:-dev}"
export PIP_CONSTRAINT="$PWD/scripts/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  if [ "${VIDSEG_SYSTEM_TORCH:-0}" = "1" ] || "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    log "creating $VENV with --system-site-packages (keeping the installed torch)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"

if "$PY" -c "import torch" >/dev/null 2>&1; then
  log "keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  WHEELS="$(mktemp -d)"
  if "$PY" -m pip download -q --no-deps --no-index -d "$WHEELS" "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    log "installing torch from the local wheel $(ls "$WHEELS")"
    "$PY" -m pip install -q "$WHEELS"/torch-*.whl 2>&1 | grep -v "^WARNING: Location" || true
  elif ! command -v nvidia-smi >/dev/null 2>&1; then
    log "no GPU: installing the CPU build of torch"
    "$PY" -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  else
    log "installing torch $TORCH_VERSION (CUDA build)"
    "$PY" -m pip install -q "torch==$TORCH_VERSION"
  fi
  rm -rf "$WHEELS"
  "$PY" -c "import torch" # fail loudly if no torch could be installed
fi

# Reinstall only when pyproject.toml changed since the last successful install.
STAMP="$VENV/.vidseg-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || ! "$PY" -c "import vidseg" >/dev/null 2>&1; then
  log "installing vidseg[$EXTRAS] (editable)"
  "$PY" -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import vidseg, torch, pycocotools, av, yacs" # fail loudly if the install did not work
  touch "$STAMP"
fi
# The Visdom page's JavaScript/CSS (pinned npm tarballs, sha512-checked); visdom itself fetches them from CDNs.
if "$PY" -c "import visdom" >/dev/null 2>&1; then
  "$VENV/bin/vidseg" visdom --fetch-only >/dev/null 2>&1 ||
    log "warning: the Visdom page's files were not installed (no npm registry?); see docs/training.md#visdom"
fi
log "environment ready: $VENV (python $("$PY" -c 'import sys; print(sys.version.split()[0])'), torch $("$PY" -c 'import torch; print(torch.__version__)'))"
