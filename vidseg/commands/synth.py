"""``vidseg synth``: write a synthetic dataset in the exact YouTube-VIS layout."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = "Write a synthetic video instance segmentation dataset in the exact YouTube-VIS layout."
EPILOG = """\
Writes OUT/train/JPEGImages/<video>/<frame>.jpg + OUT/train/instances.json and the same under OUT/valid/
(the valid JSON is annotated, so it can be scored). The same --seed gives byte-identical files.

Use it for training with:
  DATASETS.CUSTOM_TRAIN_JSON OUT/train/instances.json DATASETS.CUSTOM_TRAIN_IMAGES OUT/train/JPEGImages
  DATASETS.CUSTOM_VAL_JSON OUT/valid/instances.json DATASETS.CUSTOM_VAL_IMAGES OUT/valid/JPEGImages
  DATASETS.TRAIN "('custom_train',)" DATASETS.TEST "('custom_val',)"

example:
  vidseg synth datasets/synth --seed 0 --videos 12 --val-videos 4 --frames 8-12 --size 96x160 --classes 4
"""


def _frames(text: str) -> int | tuple[int, int]:
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            return lo, hi
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frames expects N or MIN-MAX, got {text!r}") from None


def parse_size(text: str, min_side: int = 1) -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``; an argparse ``type`` (bad input raises ``ArgumentTypeError``)."""
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size expects HxW (e.g. 96x160), got {text!r}") from None
    if h < min_side or w < min_side:
        raise argparse.ArgumentTypeError(f"--size {text}: both sides must be at least {min_side}")
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output folder (train/ and valid/ are created inside)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--videos", type=int, default=12, help="training videos (default 12)")
    p.add_argument("--val-videos", type=int, default=4, help="validation videos (default 4)")
    p.add_argument("--frames", type=_frames, default=(8, 12), help="frames per video: N or MIN-MAX (8-12)")
    p.add_argument("--size", type=parse_size, default=(96, 160), help="frame size HxW (default 96x160)")
    p.add_argument("--classes", type=int, default=4, help="number of classes, 1..8 (default 4)")
    p.add_argument("--max-instances", type=int, default=4, help="max objects per video (default 4)")


def run(args: argparse.Namespace) -> int:
    from vidseg.data.synthetic import SHAPES, generate_synthetic_dataset

    if not 1 <= args.classes <= len(SHAPES):
        print(
            f"vidseg synth: error: --classes must be in 1..{len(SHAPES)}, got {args.classes}", file=sys.stderr
        )
        return 2
    h, w = args.size
    paths = generate_synthetic_dataset(
        args.out,
        seed=args.seed,
        num_videos_train=args.videos,
        num_videos_val=args.val_videos,
        num_frames=args.frames,
        height=h,
        width=w,
        num_classes=args.classes,
        max_instances=args.max_instances,
    )
    for k, v in paths.items():
        print(f"{k:13s} {v}")
    return 0
