#!/usr/bin/env bash
# Rebuild docs/benchmarks.md from the per-script result files in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
{ cat <<'EOF'
# Benchmarks

Each script in `benchmarks/` prints a table with ratios against a baseline measured in the same run. The figures
below are the latest, with the machine they came from. All of them were taken on the development machine:
**2-core x86-64 CPU, 24 GiB, no GPU**, torch 2.13.0+cpu, while several other jobs were running on the same two
cores — absolute times are pessimistic and noisy; the ratios within one table are the meaningful part. No GPU was
lent to the session that took them, so the GPU columns (Triton kernels, FPS against DeVIS's 12.1) are still to be
measured: each script takes `--device cuda`, and `scripts/gpu_check.sh` runs them all ([GPU check](#gpu-check)).
This file is rebuilt by `scripts/collect_benchmarks.sh` from
`benchmarks/results/*.md`.

| script | what | section |
|---|---|---|
| `benchmarks/evaluator.py` | YouTube-VIS metric vs the official code | [evaluator](#evaluator) |
| `benchmarks/msda.py` | deformable attention: pure PyTorch vs per-frame fallback vs Triton | [msda](#msda) |
| `benchmarks/models.py` | DeformableDETRSegm R50 forward time, parameter counts | [models](#models) |
| `benchmarks/models.py --devis` | DeVIS R50 YT-19 training step, peak memory and forward per clip | [DeVIS video model](#devis-video) |
| `benchmarks/models.py --model mask2former` | Mask2Former R50 (GRAtt-VIS detector) per frame, parameters vs spec | [mask2former](#mask2former) |
| `benchmarks/models.py --model grattvis` | GRAtt-VIS online FPS at 360x640, peak memory at 100 vs 1,000 frames | [grattvis](#grattvis) |
| `benchmarks/backbones.py` | backbone forward time | [backbones](#backbones) |
| `benchmarks/heads.py` | mask head, matcher, criterion | [heads](#heads) |
| `benchmarks/bench_data_pipeline.py` | clip loading and augmentation throughput | [data pipeline](#data-pipeline) |
| `benchmarks/predictor.py` | streaming predictor vs whole-video inference | [predictor](#predictor) |
| `benchmarks/monitoring.py` | metric writers (JSON lines, TensorBoard, Visdom, curves.png) per write | [monitoring](#monitoring) |
| `benchmarks/contention.py` | CPU threads: quiet vs beside busy processes, `--num-gpus 2` on a CPU | [contention](#contention) |
| `scripts/gpu_check.sh` | every GPU check in one run, one report | [GPU check](#gpu-check) |
EOF
for n in evaluator msda models devis_video mask2former grattvis backbones heads data_pipeline predictor monitoring contention gpu_check; do
  f="benchmarks/results/$n.md"
  [ -f "$f" ] || continue
  printf '\n<a id="%s"></a>\n\n' "${n//_/-}"
  sed '1s/^# /## /' "$f" | sed '2,$s/^## /### /'
done; } > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
