#!/usr/bin/env bash
# Every GPU check of vidseg in one run (under 10 minutes on one GPU) and one report (docs/benchmarks.md#gpu-check):
#   1. env             GPU, driver, torch / CUDA / Triton versions
#   2. triton-gpu      Triton MSDA kernels compiled for real (TRITON_INTERPRET=0) against the PyTorch path, at the
#                      DeVIS / Deformable DETR sizes (tests/ops -m gpu)
#   3. triton-small    the same kernel tests at the small CI shapes, compiled on the GPU instead of interpreted
#   4. msda-fp32       benchmarks/msda.py --device cuda, float32 (per-level vs torch vs triton; bf16 error check)
#   5. msda-bf16       benchmarks/msda.py --device cuda, bfloat16 (DeVIS shape)
#   6. models          benchmarks/models.py on CUDA: FPS at 360x640, training step time, peak memory
#   7. mask2former     the GRAtt-VIS detector per frame, and its pixel decoder in fp32 against bf16 (Triton)
#   8. devis-video     DeVIS R50 YT-19: training step, peak memory, near-online FPS (seed: 18.4 FPS)
#   9. grattvis        GRAtt-VIS online FPS at 360x640 (tiny and R50 OVIS), peak memory at 100 vs 1,000 frames
#  10. engine-gpu      AMP (bf16, fp16 + grad scaler) and NCCL engine tests (tests/engine -m gpu)
# It stops at the first failure with one line naming the step, skips a step that does not apply (no Triton, no
# bf16 support), and prints where the report is.
#
#   bash scripts/gpu_check.sh              # run; report in output/gpu_check/<UTC time>/report.md
#   bash scripts/gpu_check.sh --dry-run    # list the steps it would run (no GPU needed)
#   bash scripts/gpu_check.sh --out DIR    # report in DIR/report.md
# Environment: PYTHON (default .venv/bin/python, else python3). Nothing is installed (GPU machines may be offline).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore
PYTEST="$PY -m pytest -q -x -rs -p no:cacheprovider"

# name | seconds allowed (all together under 10 minutes) | needs (cuda, triton, bf16) | command
STEPS=(
  "env|20|cuda|$PY -c 'import torch, platform; print(\"torch\", torch.__version__, \"CUDA\", torch.version.cuda, \"python\", platform.python_version()); [print(\"GPU\", i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i), round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1), \"GiB\") for i in range(torch.cuda.device_count())]; import importlib.util as u; print(\"triton\", __import__(\"triton\").__version__ if u.find_spec(\"triton\") else \"not installed\")'"
  "triton-gpu|100|triton|TRITON_INTERPRET=0 $PYTEST tests/ops -m gpu"
  "triton-small|60|triton|TRITON_INTERPRET=0 $PYTEST tests/ops/test_ops_msda_triton.py -m 'not gpu and not slow'"
  "msda-fp32|90|cuda|$PY benchmarks/msda.py --device cuda --dtype float32 --rounds 1 --repeats 5"
  "msda-bf16|45|bf16|$PY benchmarks/msda.py --device cuda --dtype bfloat16 --shapes devis --rounds 1 --repeats 5"
  "models|60|cuda|$PY benchmarks/models.py --device cuda --size 360 640 --iters 20 --train --train-batch 2"
  "mask2former|45|cuda|$PY benchmarks/models.py --model mask2former --device cuda"
  "devis-video|60|cuda|$PY benchmarks/models.py --devis --device cuda --iters 5"
  "grattvis|60|cuda|$PY benchmarks/models.py --model grattvis --full --device cuda"
  "engine-gpu|55|cuda|$PYTEST tests/engine -m gpu"
)

if [ "$DRY" = 1 ]; then
  total=0
  echo "gpu_check --dry-run: ${#STEPS[@]} steps (python: $PY)"
  for i in "${!STEPS[@]}"; do
    IFS='|' read -r name secs needs cmd <<<"${STEPS[$i]}"
    total=$((total + secs))
    printf 'step %d/%d %s (needs %s, at most %d s): %s\n' "$((i + 1))" "${#STEPS[@]}" "$name" "$needs" "$secs" "$cmd"
  done
  echo "at most $total s in all"
  exit 0
fi

OUT="${OUT:-output/gpu_check/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
REPORT="$OUT/report.md"
{
  echo "# vidseg GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), host $(hostname)"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} >"$REPORT"
SUMMARY="$OUT/.summary"
: >"$SUMMARY"
DETAILS="$OUT/.details"
: >"$DETAILS"

finish() {  # $1: exit code; assemble the report (summary table, then every step's output)
  cat "$SUMMARY" >>"$REPORT"
  { echo; cat "$DETAILS"; } >>"$REPORT"
  rm -f "$SUMMARY" "$DETAILS"
  echo "gpu_check: report: $REPORT"
  exit "$1"
}

# What this machine has, probed once: "cuda triton bf16" words, or the reason there is no CUDA.
PROBE="$("$PY" -c '
import importlib.util, torch
if not torch.cuda.is_available():
    print("none: torch %s (CUDA build: %s) sees no CUDA device" % (torch.__version__, torch.version.cuda or "no"))
else:
    print("cuda", "triton" if importlib.util.find_spec("triton") else "", "bf16" if torch.cuda.is_bf16_supported() else "")
' 2>&1 | tail -1)"
has() { case " $PROBE " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if ! has cuda; then
  why="${PROBE#none: }"
  echo "| all | not run: $why | 0 |" >>"$SUMMARY"
  echo "gpu_check: FAILED before step 1: $why; nothing was checked" >&2
  finish 1
fi

for i in "${!STEPS[@]}"; do
  IFS='|' read -r name secs needs cmd <<<"${STEPS[$i]}"
  n="$((i + 1))/${#STEPS[@]}"
  if ! has "$needs"; then
    case "$needs" in triton) why="Triton is not installed" ;; bf16) why="this GPU has no bfloat16 support" ;; *) why="needs $needs" ;; esac
    echo "gpu_check: step $n $name skipped ($why)"
    echo "| $name | skipped: $why | 0 |" >>"$SUMMARY"
    continue
  fi
  echo "gpu_check: step $n $name ..."
  log="$OUT/$name.log"
  t0=$(date +%s)
  timeout --kill-after=10 "$secs" bash -c "$cmd" >"$log" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  { echo "## $name"; echo; echo '```'; echo "\$ $cmd"; cat "$log"; echo '```'; echo; } >>"$DETAILS"
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then what="timed out after $secs s"; else what="exit code $rc"; fi
    echo "| $name | FAILED: $what | $dt |" >>"$SUMMARY"
    echo "gpu_check: FAILED at step $n $name ($what): $(grep -v '^\s*$' "$log" | tail -1)" >&2
    finish 1
  fi
  echo "| $name | ok | $dt |" >>"$SUMMARY"
done
echo "gpu_check: all steps passed"
finish 0
