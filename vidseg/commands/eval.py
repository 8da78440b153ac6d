"""``vidseg eval``: evaluate ``MODEL.WEIGHTS`` on ``DATASETS.TEST`` (the ``--eval-only`` path)."""

from __future__ import annotations

import argparse

from vidseg.engine.entry import add_launch_arguments, run_from_args

DESCRIPTION = (
    "Evaluate a trained model: vidseg eval --config-file X.yaml MODEL.WEIGHTS model.pth. Results go to "
    "OUTPUT_DIR/TEST.SAVE_PATH: for video sets results.json and results.zip (YouTube-VIS/OVIS format, ready "
    "for the challenge servers), for COCO sets coco_instances_results.json (bbox + segm AP), and "
    "metrics.json when the set has ground truth."
)
EPILOG = """\
examples:
  vidseg eval --config-file output/run1/config.yaml MODEL.WEIGHTS output/run1/checkpoint.pth
  vidseg eval --num-gpus 4 --config-file X.yaml MODEL.WEIGHTS model.pth OUTPUT_DIR output/eval1
  torchrun --nproc_per_node=4 -m vidseg eval --config-file X.yaml MODEL.WEIGHTS model.pth
A run folder holds checkpoint.pth (last) and checkpoint_best.pth (best TEST.BEST_METRIC). Inference is split
over the processes; scoring runs once. To score a results JSON you already have: vidseg score GT.json RES.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_launch_arguments(p, training=False)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args, eval_only=True)
