"""Command-line plumbing shared by ``vidseg train``, ``vidseg eval``, ``main.py`` and ``train_net.py``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from vidseg.config import ConfigError
from vidseg.models import load_config

__all__ = ["LAUNCH_EPILOG", "add_launch_arguments", "run_from_args"]

LAUNCH_EPILOG = """\
launching:
  one process (GPU if available, else CPU):  vidseg train --config-file X.yaml [KEY VALUE ...]
  N local processes (one per GPU; on a machine without GPUs N gloo CPU processes):
                                             vidseg train --num-gpus N --config-file X.yaml
  torchrun, one or several nodes:            torchrun --nproc_per_node=N [--nnodes ... --rdzv_endpoint ...] \\
                                                 -m vidseg train --config-file X.yaml
  evaluation only:                           vidseg eval --config-file X.yaml MODEL.WEIGHTS model.pth
resuming: automatic when OUTPUT_DIR holds checkpoint.pth of the same config; --resume forces it,
  --overwrite starts afresh. SIGINT/SIGTERM save OUTPUT_DIR/checkpoint.pth and stop cleanly.
See docs/training.md.
"""


def add_launch_arguments(
    p: argparse.ArgumentParser, eval_only_flag: bool = True, training: bool = True
) -> None:
    """The options of ``vidseg train`` (``eval_only_flag`` adds ``--eval-only``) or, with ``training=False``,
    of ``vidseg eval`` (no resume/overwrite: evaluation writes no checkpoints). Options may come anywhere,
    also after the ``KEY VALUE`` pairs (parse with ``parse_intermixed_args``)."""
    p.add_argument("--config-file", default="", metavar="PATH", help="YAML config (may use _BASE_)")
    p.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        metavar="N",
        help="local processes to spawn, one per GPU (without GPUs: N gloo CPU processes; 0 or 1: one "
        "process); ignored under torchrun",
    )
    if training and eval_only_flag:
        p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS instead of training")
    if training:
        p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pth")
        p.add_argument(
            "--overwrite", action="store_true", help="start afresh in an OUTPUT_DIR with checkpoints"
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument(
        "opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. SOLVER.BASE_LR 0.0002"
    )


def run_from_args(args: argparse.Namespace, eval_only: bool = False, extra_opts: Sequence[str] = ()) -> int:
    """Resolve the config and run training (or evaluation); returns the exit code. Config and run-folder
    problems are printed as one line, not a traceback."""
    from vidseg.engine.run import RunOptions, run_eval, run_train
    from vidseg.engine.run_setup import RunDirError

    prog = "vidseg eval" if eval_only or getattr(args, "eval_only", False) else "vidseg train"

    try:
        cfg = load_config(args.config_file or None, [*extra_opts, *args.opts])
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if not cfg.MODEL.META_ARCHITECTURE:
        print(
            f"{prog}: error: MODEL.META_ARCHITECTURE is empty; give --config-file (see configs/)",
            file=sys.stderr,
        )
        return 2
    if args.num_gpus < 0:
        print(
            f"{prog}: error: --num-gpus {args.num_gpus}: must be >= 0 (0 or 1: one process)", file=sys.stderr
        )
        return 2
    if os.path.isfile(cfg.OUTPUT_DIR):
        print(f"{prog}: error: OUTPUT_DIR {cfg.OUTPUT_DIR}: is a file, expected a folder", file=sys.stderr)
        return 2
    evaluating = eval_only or getattr(args, "eval_only", False)
    weights = str(cfg.MODEL.WEIGHTS or "")
    if evaluating and weights and not os.path.isfile(weights):  # before minutes of model building
        what = "is a folder, expected a checkpoint file" if os.path.isdir(weights) else "file not found"
        print(f"{prog}: error: MODEL.WEIGHTS {weights}: {what}", file=sys.stderr)
        return 2
    opts = RunOptions(
        resume=getattr(args, "resume", False),
        overwrite=getattr(args, "overwrite", False),
        num_procs=max(1, args.num_gpus),
        progress=not args.no_progress,
    )
    try:
        if evaluating:
            return run_eval(cfg, opts)
        return run_train(cfg, opts)
    except RunDirError as e:
        logging.getLogger("vidseg").error("%s", e)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
