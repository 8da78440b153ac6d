"""``vidseg quickstart``: synthetic data -> train -> evaluate -> render, on CPU in a few minutes."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vidseg.commands.synth import parse_size

DESCRIPTION = """\
The whole pipeline on a synthetic YouTube-VIS-format dataset, on CPU:
  1. generate the synthetic dataset (train + valid with ground truth),
  2. train the small DeVIS video model (configs/quickstart/devis_quickstart.yaml) with the training engine,
  3. evaluate it on the synthetic valid split through the near-online clip tracker (YouTube-VIS AP per
     class; results.json / results.zip),
  4. render its prediction on a longer synthetic demo video (mp4, upscaled to at least 320 px wide),
  5. print where everything went.
--method ToyVIS trains the seconds-fast toy model instead (for smoke tests)."""

EPILOG = """\
shorter or longer:
  --epochs N        training length (default: DeVIS its config's, ToyVIS 8); the LR drop keeps its place
  --videos N        training videos (default 16); --val-videos N validation videos (default 6)
  --frames F        frames per video (default 8); --clip-frames T frames per clip (default: DeVIS 3, ToyVIS 4)
  --size HxW        frame size (default 96x160); smaller is faster
  trailing KEY VALUE pairs override the training config, e.g. SOLVER.BASE_LR 0.0006 MODEL.HIDDEN_DIM 64
examples:
  vidseg quickstart                                   # DeVIS, about 10 minutes on 2 cores
  vidseg quickstart --epochs 1 --videos 4 --val-videos 2 --frames 4 --clip-frames 2 --size 64x96   # seconds
  vidseg quickstart --method ToyVIS                   # the toy model, about a minute
  vidseg quickstart --epochs 30 --videos 32 --out runs/quick_long          # longer, better masks
"""


METHODS = ("DeVIS", "ToyVIS", "GRAttVIS")  # GRAttVIS: the two-stage run of quickstart_grattvis.py
DEVIS_CONFIG = "quickstart/devis_quickstart.yaml"
TOY_EPOCHS, TOY_CLIP_FRAMES = 8, 4  # ToyVIS: seconds per epoch
DEMO_FRAMES = 24  # the rendered demo video: 24 frames at 6 fps (4 s), upscaled to >= 320 px wide
DEMO_FPS = 6
DEMO_MIN_WIDTH = 320


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="output/quickstart", help="folder for data, run, results and video")
    p.add_argument(
        "--method",
        default="DeVIS",
        choices=METHODS,
        type=lambda s: {m.lower(): m for m in METHODS}.get(s.lower(), s),  # --method grattvis works too
        help=f"DeVIS (default; configs/{DEVIS_CONFIG}), ToyVIS (a toy model trained in seconds) or GRAttVIS",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs (default: DeVIS its config's, ToyVIS {TOY_EPOCHS})",
    )
    p.add_argument("--videos", type=int, default=16, help="synthetic training videos (default 16)")
    p.add_argument("--val-videos", type=int, default=6, help="synthetic validation videos (default 6)")
    p.add_argument("--frames", type=int, default=8, help="frames per synthetic video (default 8)")
    p.add_argument(
        "--clip-frames",
        type=int,
        default=None,
        help=f"frames per clip (default: DeVIS its config's, ToyVIS {TOY_CLIP_FRAMES})",
    )
    p.add_argument("--size", default="96x160", help="frame size HxW (default 96x160)")
    p.add_argument("--classes", type=int, default=4, help="shape classes, 1..8 (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the run")
    p.add_argument("--no-render", action="store_true", help="skip the prediction video")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT/run and OUT/data (default: an earlier run is kept and this one goes to OUT/run-2, "
        "...; data of other settings goes to OUT/data-2, ...)",
    )
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="KEY VALUE overrides of the training config")


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text, min_side=32)
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"error: {e}") from None


def set_data_and_resolution(cfg, args: argparse.Namespace, data: dict, run_dir: Path, frames: int) -> None:
    """The settings every quickstart run shares: output folder, seed, CPU, the synthetic splits as custom
    datasets, ``frames`` per clip, and the native resolution ``args.size``."""
    h, w = _size(args.size)
    cfg.OUTPUT_DIR = str(run_dir)
    cfg.SEED = args.seed
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = ("custom_train",)
    cfg.DATASETS.TEST = ("custom_val",)
    cfg.DATASETS.CUSTOM_TRAIN_JSON = str(data["train_json"])
    cfg.DATASETS.CUSTOM_TRAIN_IMAGES = str(data["train_images"])
    cfg.DATASETS.CUSTOM_VAL_JSON = str(data["val_json"])
    cfg.DATASETS.CUSTOM_VAL_IMAGES = str(data["val_images"])
    cfg.INPUT.NUM_FRAMES = frames
    # Native resolution: the synthetic shapes are small; no crop, flips only.
    cfg.INPUT.MIN_SIZE_TRAIN = (min(h, w),)
    cfg.INPUT.MAX_SIZE_TRAIN = max(h, w)
    cfg.INPUT.MIN_SIZE_TEST = min(h, w)
    cfg.INPUT.MAX_SIZE_TEST = max(h, w)
    cfg.INPUT.CROP.ENABLED = False
    cfg.DATALOADER.NUM_WORKERS = 1


def quickstart_config(args: argparse.Namespace, data: dict, run_dir: Path):
    """The training config of the quickstart, DeVIS or ToyVIS (``args.method``, default DeVIS; plain keys,
    printed into run_dir/config.yaml). ``args.epochs`` / ``args.clip_frames`` None (or absent) take the
    method's defaults."""
    from vidseg.config import merge_overrides
    from vidseg.models import get_cfg, load_config

    h, w = _size(args.size)
    method = getattr(args, "method", METHODS[0])
    epochs, t = getattr(args, "epochs", None), getattr(args, "clip_frames", None)
    if method == "DeVIS":
        cfg = load_config(DEVIS_CONFIG, freeze=False)
        slots = cfg.MODEL.NUM_QUERIES // cfg.MODEL.DEVIS.NUM_FRAMES
        t = t or cfg.MODEL.DEVIS.NUM_FRAMES
        epochs = epochs or cfg.SOLVER.EPOCHS
        cfg.MODEL.DEVIS.NUM_FRAMES = t  # one clip length for the model and the data
        cfg.MODEL.NUM_QUERIES = slots * t  # the config's trajectories per clip, whatever the clip length
        steps = [s_ * epochs // cfg.SOLVER.EPOCHS for s_ in cfg.SOLVER.STEPS]  # same place in a longer run
        steps = tuple(max(1, s_) for s_ in steps)
    else:
        cfg = get_cfg("ToyVIS")
        cfg.MODEL.TOY.NUM_QUERIES = 8
        cfg.MODEL.TOY.HIDDEN_DIM = 48
        t, epochs = t or TOY_CLIP_FRAMES, epochs or TOY_EPOCHS
        steps = (max(1, int(epochs * 0.75)),)
    set_data_and_resolution(cfg, args, data, run_dir, t)
    if method != "DeVIS":  # DeVIS keeps its config's optimiser settings
        cfg.SOLVER.BASE_LR = 1e-3
        cfg.SOLVER.BATCH_SIZE = 2
        cfg.SOLVER.GRAD_CLIP_MAX_NORM = 1.0
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.EPOCHS = epochs
    cfg.SOLVER.STEPS = steps
    cfg.SOLVER.CHECKPOINT_PERIOD = 0
    cfg.TEST.EVAL_PERIOD = epochs  # once, at the end
    cfg.VISDOM_AND_LOG_INTERVAL = 10
    merge_overrides(cfg, args.opts)
    return cfg


def demo_video(data_dir: Path, settings: dict) -> list[Path]:
    """The frame files of the demo video: one synthetic video of ``DEMO_FRAMES`` frames (split ``demo``,
    same seed, size and classes as the data), written next to train/ and valid/ on first use."""
    from vidseg.data.synthetic import generate_split

    json_path = data_dir / "demo" / "instances.json"
    if not json_path.is_file():
        h, w = settings["size"]
        generate_split(
            data_dir, "demo", seed=settings["seed"], num_videos=1, num_frames=DEMO_FRAMES, height=h, width=w,
            num_classes=settings["classes"], progress=False,
        )  # fmt: skip
    video = json.loads(json_path.read_text(encoding="utf-8"))["videos"][0]
    return [data_dir / "demo" / "JPEGImages" / f for f in video["file_names"]]


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``[factor * H, factor * W, 3]`` (bicubic): the model sees the same content (the
    predictor resizes back to the test size), while masks, outlines and labels are drawn at the large size."""
    if factor == 1:
        return frame
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w * factor, h * factor), Image.BICUBIC))


def render_demo(run_dir: Path, frame_files: list[Path], out_path: Path, progress: bool = False) -> Path:
    """Predict the demo video with the run's checkpoint (the method's own tracker, as ``vidseg predict``) and
    render its six best tracks, at ``DEMO_FPS`` and upscaled to at least ``DEMO_MIN_WIDTH`` pixels wide."""
    from vidseg.inference import VideoPredictor
    from vidseg.models import load_config
    from vidseg.visualization import render_result_to_file

    cfg = load_config(run_dir / "config.yaml")
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in frame_files]
    factor = max(1, math.ceil(DEMO_MIN_WIDTH / frames[0].shape[1]))
    frames = [upscale(f, factor) for f in frames]
    predictor = VideoPredictor.from_config(cfg, str(run_dir / "checkpoint.pth"), device="cpu", topk=6)
    result = predictor.predict(frames, progress=progress)
    return render_result_to_file(
        out_path, frames, result, classes=predictor.classes, score_threshold=0.3, fps=DEMO_FPS
    )


STAMP = "quickstart_data.json"  # the settings a data folder was generated with


def _numbered(out: Path, name: str) -> list[Path]:
    """``out/name``, ``out/name-2``, ``out/name-3``, ... (as many as exist, plus the next free one)."""
    paths = [out / name]
    while paths[-1].exists():
        paths.append(out / f"{name}-{len(paths) + 1}")
    return paths


def choose_folders(out: Path, data_settings: dict, overwrite: bool) -> tuple[Path, bool, Path]:
    """``(data folder, whether to generate it, run folder)``. Nothing of an earlier quickstart is replaced
    without ``overwrite``: the data folder of the same settings is reused, other settings get a new one, and
    a run folder that holds a run (a checkpoint or a config) is never reused."""
    if overwrite:
        return out / "data", True, out / "run"
    data_dir, generate = None, True
    for cand in _numbered(out, "data"):
        stamp = cand / STAMP
        if not cand.exists():
            data_dir = cand
            break
        if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == data_settings:
            data_dir, generate = cand, False
            break
    assert data_dir is not None
    run_dir = next(
        c
        for c in _numbered(out, "run")
        if not ((c / "checkpoint.pth").exists() or (c / "config.yaml").exists())
    )
    return data_dir, generate, run_dir


def run(args: argparse.Namespace) -> int:
    if args.method == "GRAttVIS":  # a detector stage, then the head: its own pipeline
        from vidseg.commands.quickstart_grattvis import run as run_grattvis

        return run_grattvis(args)
    from vidseg.data import generate_synthetic_dataset
    from vidseg.engine.run import RunOptions, run_train

    t0 = time.time()
    out = Path(args.out)
    h, w = _size(args.size)
    settings = {
        "seed": args.seed, "videos": args.videos, "val_videos": args.val_videos, "frames": args.frames,
        "size": [h, w], "classes": args.classes,
    }  # fmt: skip
    data_dir, generate, run_dir = choose_folders(out, settings, args.overwrite)
    if run_dir != out / "run":
        print(f"{out / 'run'} holds an earlier run, kept: this run goes to {run_dir} (--overwrite replaces "
              f"{out / 'run'} instead)", flush=True)  # fmt: skip
    if generate:
        print(f"[1/4] synthetic dataset -> {data_dir}", flush=True)
        data = generate_synthetic_dataset(
            data_dir,
            seed=args.seed,
            num_videos_train=args.videos,
            num_videos_val=args.val_videos,
            num_frames=args.frames,
            height=h,
            width=w,
            num_classes=args.classes,
            progress=not args.no_progress,
        )
        (data_dir / STAMP).write_text(json.dumps(settings), encoding="utf-8")
    else:
        print(f"[1/4] synthetic dataset of these settings: {data_dir} (reused)", flush=True)
        data = {
            "train_json": data_dir / "train" / "instances.json",
            "train_images": data_dir / "train" / "JPEGImages",
            "val_json": data_dir / "valid" / "instances.json",
            "val_images": data_dir / "valid" / "JPEGImages",
        }
    cfg = quickstart_config(args, data, run_dir)
    arch, epochs = cfg.MODEL.META_ARCHITECTURE, cfg.SOLVER.EPOCHS
    print(f"[2/4] training {arch} for {epochs} epochs -> {run_dir}", flush=True)
    rc = run_train(cfg, RunOptions(overwrite=args.overwrite, progress=not args.no_progress))
    if rc:
        print("vidseg quickstart: error: training failed, see", run_dir / "log.txt", file=sys.stderr)
        return rc
    eval_dir = run_dir / cfg.TEST.SAVE_PATH / f"epoch_{cfg.SOLVER.EPOCHS}"
    print(f"[3/4] evaluation on the synthetic valid split -> {eval_dir}", flush=True)
    metrics: dict = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "eval":
            metrics = {k: v for k, v in rec.items() if k.startswith("segm/")}
    video = None
    if not args.no_render:
        print(f"[4/4] predicting and rendering the {DEMO_FRAMES}-frame demo video", flush=True)
        frame_files = demo_video(data_dir, settings)
        video = render_demo(run_dir, frame_files, run_dir / "prediction.mp4", progress=not args.no_progress)
    keep = ("AP", "AP50", "AP75", "AR10")
    summary = {k: round(v, 2) for k, v in metrics.items() if k.split("/")[-1] in keep}
    per_class = {k.split("-", 1)[1]: round(v, 2) for k, v in metrics.items() if k.startswith("segm/AP-")}
    print(f"\ndone in {time.time() - t0:.0f} s")
    print(f"  data:        {data_dir} (YouTube-VIS layout: train/, valid/ with instances.json)")
    print(f"  run:         {run_dir} (config.yaml, log.txt, metrics.jsonl, checkpoint.pth)")
    print(f"  results:     {eval_dir / 'results.json'} and results.zip")
    print(f"  metrics:     {summary or 'none'}")
    if per_class:
        print(f"  AP by class: {per_class}")
    if (run_dir / "curves.png").is_file():
        print(f"  curves:      {run_dir / 'curves.png'} (vidseg plot {run_dir} redraws it)")
    if video is not None:
        print(f"  prediction:  {video}")
    return 0
