"""``vidseg quickstart --method GRAttVIS``: the two-stage GRAtt-VIS recipe on the quickstart's synthetic data.

GRAtt-VIS has a per-frame detector (Mask2Former) and a propagation head trained on top of it with the detector
frozen, so the quickstart trains twice:

  1. the tiny Mask2Former (``quickstart/mask2former_tiny.yaml``) on single frames -> ``<run>/detector``,
  2. the GRAtt head (``quickstart/grattvis_tiny.yaml``) on clips, loading stage 1's checkpoint through
     ``MODEL.WEIGHTS`` (frozen; the head starts fresh) -> ``<run>``, evaluated at its end on the synthetic
     valid split with the tracker-free online inference (``<run>/eval_results/<tag>/results.json``),

then renders the demo video with ``<run>``'s checkpoint, as the DeVIS quickstart does.

How the quickstart's options map onto the two stages: ``--epochs N`` trains each stage N epochs over its
training clips (default: iteration schedules, detector ``DETECTOR_ITERS`` and head ``HEAD_ITERS``
iterations); ``--clip-frames T`` is the head's clip length (default 3; the detector always sees single
frames); the data options are the quickstart's; trailing ``KEY VALUE`` overrides go to the head's config
(those of ``SHARED_KEYS``, about the machine, to the detector's too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vidseg.commands import quickstart as qs

if TYPE_CHECKING:
    from vidseg.config import CfgNode

DETECTOR_CONFIG = "quickstart/mask2former_tiny.yaml"
HEAD_CONFIG = "quickstart/grattvis_tiny.yaml"
# 2.5x and 1.7x the recipe of tests/models_grattvis/test_gratt_train_e2e.py (2 classes there, 4 here): the
# 400-iteration detector reached segm/AP 31.2 here, 1000 iterations 36.9 (docs/grattvis.md).
DETECTOR_ITERS = 1000
HEAD_ITERS = 500
LR_DROP_AT = 0.8  # the LR drop, as a fraction of each stage
SHARED_KEYS = ("DATALOADER.", "MODEL.DEVICE", "MODEL.CPU_THREADS", "SEED")  # overrides that reach both stages


def _common(cfg: CfgNode, args: argparse.Namespace, data: dict, out_dir: Path, frames: int) -> None:
    """The settings both stages share: data, device, native resolution, the ``--epochs`` schedule."""
    qs.set_data_and_resolution(cfg, args, data, out_dir, frames)
    cfg.SOLVER.CHECKPOINT_PERIOD = 0
    cfg.VISDOM_AND_LOG_INTERVAL = 10
    epochs = getattr(args, "epochs", None)
    if epochs:
        cfg.SOLVER.SCHEDULE = "epoch"
        cfg.SOLVER.EPOCHS = epochs
        cfg.SOLVER.STEPS = (max(1, int(epochs * LR_DROP_AT)),)
    # Iteration schedules: MAX_ITER is set by the caller; the drop keeps its place in a longer run.


def grattvis_configs(args: argparse.Namespace, data: dict, run_dir: Path) -> tuple[CfgNode, CfgNode]:
    """``(detector cfg -> run_dir/detector, head cfg -> run_dir)`` of the two-stage quickstart (plain keys;
    ``data`` as :func:`vidseg.data.generate_synthetic_dataset` returns). The head's ``MODEL.WEIGHTS`` is the
    detector's checkpoint; only the head is evaluated (``TEST.EVAL_PERIOD``: once, at its end)."""
    from vidseg.config import merge_overrides
    from vidseg.models import load_config

    det = load_config(DETECTOR_CONFIG, freeze=False)
    _common(det, args, data, run_dir / "detector", frames=1)
    det.TEST.EVAL_PERIOD = 0  # the detector alone is not a video model: scored through the head
    head = load_config(HEAD_CONFIG, freeze=False)
    _common(head, args, data, run_dir, frames=getattr(args, "clip_frames", None) or head.INPUT.NUM_FRAMES)
    head.MODEL.WEIGHTS = str(run_dir / "detector" / "checkpoint.pth")
    for cfg, iters in ((det, DETECTOR_ITERS), (head, HEAD_ITERS)):
        if cfg.SOLVER.SCHEDULE == "iter":
            cfg.SOLVER.MAX_ITER = iters
            cfg.SOLVER.STEPS = (int(iters * LR_DROP_AT),)
    opts = list(getattr(args, "opts", []) or [])
    merge_overrides(head, opts)
    # Settings of the machine, not of the model, hold for the detector stage too.
    pairs = list(zip(opts[::2], opts[1::2]))
    merge_overrides(det, [x for k, v in pairs if k.startswith(SHARED_KEYS) for x in (k, v)])
    head.TEST.EVAL_PERIOD = head.SOLVER.EPOCHS if head.SOLVER.SCHEDULE == "epoch" else head.SOLVER.MAX_ITER
    return det, head


def _length(cfg: CfgNode) -> str:
    if cfg.SOLVER.SCHEDULE == "epoch":
        return f"{cfg.SOLVER.EPOCHS} epochs"
    return f"{cfg.SOLVER.MAX_ITER} iterations"


def _eval_metrics(run_dir: Path) -> dict:
    metrics: dict = {}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        rec = json.loads(line)
        if rec.get("type") == "eval":
            metrics = {k: v for k, v in rec.items() if k.startswith("segm/")}
    return metrics


def run(args: argparse.Namespace) -> int:
    """The whole two-stage quickstart; 0 on success. Prints which stage runs and where everything went."""
    from vidseg.data import generate_synthetic_dataset
    from vidseg.engine.run import RunOptions, run_train

    t0 = time.time()
    out = Path(args.out)
    h, w = qs._size(args.size)
    settings = {
        "seed": args.seed, "videos": args.videos, "val_videos": args.val_videos, "frames": args.frames,
        "size": [h, w], "classes": args.classes,
    }  # fmt: skip
    data_dir, generate, run_dir = qs.choose_folders(out, settings, args.overwrite)
    if run_dir != out / "run":
        print(f"{out / 'run'} holds an earlier run, kept: this run goes to {run_dir} (--overwrite replaces "
              f"{out / 'run'} instead)", flush=True)  # fmt: skip
    data = {
        "train_json": data_dir / "train" / "instances.json",
        "train_images": data_dir / "train" / "JPEGImages",
        "val_json": data_dir / "valid" / "instances.json",
        "val_images": data_dir / "valid" / "JPEGImages",
    }
    if generate:
        print(f"[1/5] synthetic dataset -> {data_dir}", flush=True)
        data = generate_synthetic_dataset(
            data_dir, seed=args.seed, num_videos_train=args.videos, num_videos_val=args.val_videos,
            num_frames=args.frames, height=h, width=w, num_classes=args.classes,
            progress=not args.no_progress,
        )  # fmt: skip
        (data_dir / qs.STAMP).write_text(json.dumps(settings), encoding="utf-8")
    else:
        print(f"[1/5] synthetic dataset of these settings: {data_dir} (reused)", flush=True)
    det, head = grattvis_configs(args, data, run_dir)
    opts = RunOptions(overwrite=args.overwrite, progress=not args.no_progress)
    stages = (
        ("2/5", "stage 1: the detector", det, f"{det.MODEL.META_ARCHITECTURE} on single frames"),
        ("3/5", "stage 2: the GRAtt head", head, f"{head.MODEL.META_ARCHITECTURE} head on "
         f"{head.INPUT.NUM_FRAMES}-frame clips, detector frozen"),
    )  # fmt: skip
    for step, name, cfg, what in stages:
        print(f"[{step}] {name}: training {what} for {_length(cfg)} -> {cfg.OUTPUT_DIR}", flush=True)
        rc = run_train(cfg, opts)
        if rc:
            log = Path(cfg.OUTPUT_DIR) / "log.txt"
            print(f"vidseg quickstart: error: {name} failed, see {log}", file=sys.stderr)
            return rc
    tag = f"epoch_{head.SOLVER.EPOCHS}" if head.SOLVER.SCHEDULE == "epoch" else f"iter_{head.SOLVER.MAX_ITER}"
    eval_dir = run_dir / head.TEST.SAVE_PATH / tag
    print(f"[4/5] evaluation (online, tracker-free) on the synthetic valid split -> {eval_dir}", flush=True)
    metrics = _eval_metrics(run_dir)
    video = None
    if not args.no_render:
        print(f"[5/5] predicting and rendering the {qs.DEMO_FRAMES}-frame demo video", flush=True)
        frame_files = qs.demo_video(data_dir, settings)
        video = qs.render_demo(
            run_dir, frame_files, run_dir / "prediction.mp4", progress=not args.no_progress
        )
    keep = ("AP", "AP50", "AP75", "AR10")
    summary = {k: round(v, 2) for k, v in metrics.items() if k.split("/")[-1] in keep}
    per_class = {k.split("-", 1)[1]: round(v, 2) for k, v in metrics.items() if k.startswith("segm/AP-")}
    print(f"\ndone in {time.time() - t0:.0f} s")
    print(f"  data:        {data_dir} (YouTube-VIS layout: train/, valid/ with instances.json)")
    print(f"  detector:    {run_dir / 'detector'} (stage 1: config.yaml, log.txt, checkpoint.pth)")
    print(f"  run:         {run_dir} (stage 2: config.yaml, log.txt, metrics.jsonl, checkpoint.pth)")
    print(f"  results:     {eval_dir / 'results.json'} and results.zip")
    print(f"  metrics:     {summary or 'none'}")
    if per_class:
        print(f"  AP by class: {per_class}")
    if video is not None:
        print(f"  prediction:  {video}")
    return 0
