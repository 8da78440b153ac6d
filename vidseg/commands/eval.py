"""``vidseg eval``: evaluate ``MODEL.WEIGHTS`` on ``DATASETS.TEST`` (the ``--eval-only`` path)."""

from __future__ import annotations

import argparse

from vidseg.engine.entry import LAUNCH_EPILOG, add_launch_arguments, run_from_args

DESCRIPTION = (
    "Evaluate a trained model: vidseg eval --config-file X.yaml MODEL.WEIGHTS model.pth. Results go to "
    "OUTPUT_DIR/TEST.SAVE_PATH: for video sets results.json and results.zip (YouTube-VIS/OVIS format, ready "
    "for the challenge servers), for COCO sets coco_instances_results.json (bbox + segm AP), and "
    "metrics.json when the set has ground truth."
)
EPILOG = LAUNCH_EPILOG


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_launch_arguments(p, eval_only_flag=False)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args, eval_only=True)
