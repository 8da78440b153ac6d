"""``vidseg train``: train a model from a config (one process, ``--num-gpus N``, or torchrun)."""

from __future__ import annotations

import argparse

from vidseg.engine.entry import LAUNCH_EPILOG, add_launch_arguments, run_from_args

DESCRIPTION = (
    "Train a model from a config. Trailing KEY VALUE pairs override the config "
    "(e.g. SOLVER.BASE_LR 0.0002 OUTPUT_DIR out/run1). --eval-only evaluates MODEL.WEIGHTS instead."
)
EPILOG = LAUNCH_EPILOG


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_launch_arguments(p)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args)
