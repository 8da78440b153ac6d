"""``vidseg quickstart``: synthetic data -> train -> evaluate -> render, on CPU in a few minutes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vidseg.commands.synth import parse_size

DESCRIPTION = """\
The whole pipeline on a synthetic YouTube-VIS-format dataset, on CPU:
  1. generate the synthetic dataset (train + valid with ground truth),
  2. train the small ToyVIS model (a query-based clip mask model) with the training engine,
  3. evaluate on the synthetic valid split (YouTube-VIS AP; results.json / results.zip),
  4. render one prediction video (mp4),
  5. print where everything went.
The defaults finish in a few minutes on 2 CPU cores."""

EPILOG = """\
shorter or longer:
  --epochs N        training length (default 8; 2 gives a smoke test in about a minute, 30 a sharper model)
  --videos N        training videos (default 16); --val-videos N validation videos (default 6)
  --frames F        frames per video (default 8); --clip-frames T frames per training clip (default 4)
  --size HxW        frame size (default 96x160); smaller is faster
  trailing KEY VALUE pairs override the training config, e.g. SOLVER.BASE_LR 0.002 MODEL.TOY.HIDDEN_DIM 64
examples:
  vidseg quickstart                                   # a few minutes on 2 cores
  vidseg quickstart --epochs 2 --videos 8 --val-videos 2 --size 64x96      # about a minute
  vidseg quickstart --epochs 30 --videos 64 --out runs/quick_long          # longer, better masks
  vidseg quickstart --method DeVIS --clip-frames 3 --size 64x96           # the small DeVIS video model
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="output/quickstart", help="folder for data, run, results and video")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--videos", type=int, default=16, help="synthetic training videos (default 16)")
    p.add_argument("--val-videos", type=int, default=6, help="synthetic validation videos (default 6)")
    p.add_argument("--frames", type=int, default=8, help="frames per synthetic video (default 8)")
    p.add_argument("--clip-frames", type=int, default=4, help="frames per training clip (default 4)")
    p.add_argument("--size", default="96x160", help="frame size HxW (default 96x160)")
    p.add_argument("--classes", type=int, default=4, help="shape classes, 1..8 (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the run")
    p.add_argument("--no-render", action="store_true", help="skip the prediction video")
    p.add_argument(
        "--method",
        default="ToyVIS",
        choices=("ToyVIS", "DeVIS"),
        help="ToyVIS (default) or DeVIS (configs/quickstart/devis_tiny.yaml, clips of --clip-frames frames)",
    )
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


def quickstart_config(args: argparse.Namespace, data: dict, run_dir: Path):
    """The training config of the quickstart, ToyVIS or DeVIS (``--method``; plain keys, printed into
    run_dir/config.yaml)."""
    from vidseg.config import merge_overrides
    from vidseg.models import get_cfg

    h, w = _size(args.size)
    method = getattr(args, "method", "ToyVIS")
    if method == "DeVIS":
        from vidseg.models import load_config

        cfg = load_config("quickstart/devis_tiny.yaml", freeze=False)
        t = args.clip_frames
        cfg.MODEL.DEVIS.NUM_FRAMES = t  # one clip length for the model and the data
        cfg.MODEL.NUM_QUERIES = 6 * t  # 6 trajectories per clip
    else:
        cfg = get_cfg("ToyVIS")
        cfg.MODEL.TOY.NUM_QUERIES = 8
        cfg.MODEL.TOY.HIDDEN_DIM = 48
    cfg.OUTPUT_DIR = str(run_dir)
    cfg.SEED = args.seed
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = ("custom_train",)
    cfg.DATASETS.TEST = ("custom_val",)
    cfg.DATASETS.CUSTOM_TRAIN_JSON = str(data["train_json"])
    cfg.DATASETS.CUSTOM_TRAIN_IMAGES = str(data["train_images"])
    cfg.DATASETS.CUSTOM_VAL_JSON = str(data["val_json"])
    cfg.DATASETS.CUSTOM_VAL_IMAGES = str(data["val_images"])
    cfg.INPUT.NUM_FRAMES = args.clip_frames
    # Native resolution: the synthetic shapes are small; no crop, flips only.
    cfg.INPUT.MIN_SIZE_TRAIN = (min(h, w),)
    cfg.INPUT.MAX_SIZE_TRAIN = max(h, w)
    cfg.INPUT.MIN_SIZE_TEST = min(h, w)
    cfg.INPUT.MAX_SIZE_TEST = max(h, w)
    cfg.INPUT.CROP.ENABLED = False
    cfg.DATALOADER.NUM_WORKERS = 1
    if method != "DeVIS":  # DeVIS keeps its config's optimiser settings (one clip per step, clipping 0.1)
        cfg.SOLVER.BASE_LR = 1e-3
        cfg.SOLVER.BATCH_SIZE = 2
        cfg.SOLVER.GRAD_CLIP_MAX_NORM = 1.0
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.EPOCHS = args.epochs
    cfg.SOLVER.STEPS = (max(1, int(args.epochs * 0.75)),)
    cfg.SOLVER.CHECKPOINT_PERIOD = 0
    cfg.TEST.EVAL_PERIOD = args.epochs  # once, at the end
    cfg.VISDOM_AND_LOG_INTERVAL = 10
    merge_overrides(cfg, args.opts)
    return cfg


def _render(cfg, run_dir: Path, results_json: Path, out_path: Path) -> Path | None:
    """Render the prediction of the first validation video with at least one confident track."""
    from vidseg.data import load_dataset
    from vidseg.data.video_io import FrameSource
    from vidseg.evaluation.results_file import read_results
    from vidseg.structures.results import VideoResult
    from vidseg.visualization import render_result_to_file

    records, meta = load_dataset("custom_val", cfg)
    rec = records[0]
    results = read_results(
        results_json,
        {r.video_id: (r.height, r.width) for r in records},
        meta.category_id_to_label,
    )
    result = results.get(rec.video_id, VideoResult(rec.video_id, rec.height, rec.width, []))
    result.tracks = result.tracks[:6]  # the six best
    frames = FrameSource(files=rec.file_names, name=rec.describe())
    return render_result_to_file(out_path, frames, result, classes=meta.classes, score_threshold=0.3, fps=4)


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
    print(f"[2/4] training {cfg.MODEL.META_ARCHITECTURE} for {args.epochs} epochs -> {run_dir}", flush=True)
    rc = run_train(cfg, RunOptions(overwrite=args.overwrite, progress=not args.no_progress))
    if rc:
        print("vidseg quickstart: error: training failed, see", run_dir / "log.txt", file=sys.stderr)
        return rc
    eval_dir = run_dir / cfg.TEST.SAVE_PATH / f"epoch_{args.epochs}"
    print(f"[3/4] evaluation on the synthetic valid split -> {eval_dir}", flush=True)
    metrics = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "eval":
            metrics = {k: v for k, v in rec.items() if k.startswith("segm/") and "-" not in k}
    video = None
    if not args.no_render and (eval_dir / "results.json").is_file():
        print("[4/4] rendering one prediction video", flush=True)
        video = _render(cfg, run_dir, eval_dir / "results.json", run_dir / "prediction.mp4")
    keep = ("AP", "AP50", "AP75", "AR10")
    summary = {k: round(v, 2) for k, v in metrics.items() if k.split("/")[-1] in keep}
    print(f"\ndone in {time.time() - t0:.0f} s")
    print(f"  data:        {data_dir} (YouTube-VIS layout: train/, valid/ with instances.json)")
    print(f"  run:         {run_dir} (config.yaml, log.txt, metrics.jsonl, checkpoint.pth)")
    print(f"  results:     {eval_dir / 'results.json'} and results.zip")
    print(f"  metrics:     {summary or 'none'}")
    if (run_dir / "curves.png").is_file():
        print(f"  curves:      {run_dir / 'curves.png'} (vidseg plot {run_dir} redraws it)")
    if video is not None:
        print(f"  prediction:  {video}")
    return 0
