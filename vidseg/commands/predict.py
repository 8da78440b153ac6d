"""``vidseg predict``: segment and track the objects of a video file or a folder of frames."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

DESCRIPTION = (
    "Run a trained model on a video file (mp4, avi, mov, mkv, webm, gif) or a folder of JPEG/PNG frames: "
    "writes the tracks as an official results JSON (dataset category ids) and renders them over the video."
)
EPILOG = """\
outputs (in --out, default OUTPUT_DIR/predict):
  results.json, results.zip   one entry per track: video_id, score, category_id, segmentations (RLE per frame)
  <name>.mp4                  the video with each track above --score-threshold drawn in its colour, labelled
                              "<track id>: <class> <score>" (left out with --no-render); <name>_pred.mp4
                              when <name>.mp4 would be the source itself (the source is never written)
Existing outputs are not replaced unless --overwrite is given.
Class names and category ids come from MODEL.CLASS_NAMES / MODEL.CATEGORY_IDS (a run's config.yaml has
them), else DATASETS.TEST[0] (else DATASETS.TRAIN[0]) of the config; without them tracks are labelled
"class <label>" and category id = label + 1.

examples:
  vidseg predict walk.mp4 --config-file configs/devis/YT-19/devis_R_50_YT-19.yaml --weights devis_r50.pth
  vidseg predict frames/ --config-file cfg.yaml --weights model.pth --out pred --score-threshold 0.5 \\
      --topk 10 INPUT.MIN_SIZE_TEST 480
See docs/inference.md for the Python API (VideoPredictor).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="video file or folder of frames")
    p.add_argument("--config-file", required=True, metavar="CFG", help="YAML config of the model")
    p.add_argument("--weights", metavar="W", help="checkpoint to load (default: MODEL.WEIGHTS)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: OUTPUT_DIR/predict)")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        metavar="S",
        help="draw (and list) only tracks scoring at least S (default 0.3); results.json keeps all tracks",
    )
    p.add_argument("--topk", type=int, default=0, metavar="N", help="keep the N best tracks (default: all)")
    p.add_argument("--no-render", action="store_true", help="do not write the rendered video")
    p.add_argument("--overwrite", action="store_true", help="replace results and video already in --out")
    p.add_argument("--device", metavar="DEV", help="cpu | cuda | cuda:1 | auto (default: MODEL.DEVICE)")
    p.add_argument("--max-frames", type=int, default=0, metavar="N", help="only the first N frames")
    p.add_argument(
        "--fps", type=float, default=0.0, help="rate of the rendered video (default: the source's)"
    )
    p.add_argument(
        "--clip-length",
        type=int,
        default=0,
        metavar="T",
        help="for methods that run on whole videos: run on clips of T frames and stitch tracks by mask IoU "
        "(bounded memory on long videos; default 0: whole video)",
    )
    p.add_argument("--clip-stride", type=int, default=0, metavar="S", help="clip stride (default: T // 2)")
    p.add_argument("--video-id", type=int, default=0, help="video_id written in results.json (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. INPUT.MIN_SIZE_TEST 480"
    )
    # "SOURCE --config-file X KEY VALUE" has options between two positionals: plain parse_args would give
    # the first positional run to SOURCE and an empty override list, then reject KEY VALUE as unrecognised.
    p.parse_args = p.parse_intermixed_args  # type: ignore[method-assign]


def _error(msg: object) -> int:
    print(f"vidseg predict: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from vidseg.checkpoints import CheckpointError
    from vidseg.config import ConfigError
    from vidseg.data.errors import DatasetError
    from vidseg.inference import PredictorError, VideoPredictor, render_result_streaming
    from vidseg.models import load_config

    for flag in ("topk", "max_frames", "clip_length", "clip_stride", "fps"):
        if getattr(args, flag) < 0:  # 0 is each one's default (all / the source's); below is a typo
            return _error(f"--{flag.replace('_', '-')} {getattr(args, flag):g}: must be >= 0")
    source = Path(args.source)
    if not source.exists():
        return _error(f"source not found: {source}")
    from vidseg.config.config import resolve_config_path

    try:  # a file, or a config shipped with the package (as `vidseg eval` and `vidseg train` accept)
        resolve_config_path(args.config_file)
    except ConfigError as e:
        return _error(e)
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        return _error(e)
    from vidseg.utils.threads import configure_threads

    configure_threads(cfg_threads=cfg.MODEL.CPU_THREADS)
    out = Path(args.out) if args.out else Path(cfg.OUTPUT_DIR) / "predict"
    if out.exists() and not out.is_dir():  # before the model runs, not when the results are written
        return _error(f"--out {out}: is a file, expected a folder")
    video_out = _video_path(source, out, args.no_render)
    outputs = [out / "results.json", out / "results.zip", *([video_out] if video_out else [])]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:
        return _error(
            f"would replace {', '.join(existing)}; pass --overwrite to replace, or choose another --out"
        )
    from vidseg.engine.run_setup import setup_logging

    # INFO lines on the console, as eval and train print them: which format the weights file was recognised
    # as, how many tensors were mapped and what was left out (predict writes no log.txt).
    setup_logging(None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor = VideoPredictor.from_config(
                cfg,
                args.weights,
                device=args.device,
                topk=args.topk if args.topk > 0 else None,
                clip_length=max(args.clip_length, 0),
                clip_stride=max(args.clip_stride, 0),
            )
        for w in caught:  # one line each, without the source line Python's default format adds
            print(f"vidseg predict: warning: {w.message}", file=sys.stderr)
        if args.clip_length > 0 and predictor.streaming:
            print(
                f"vidseg predict: warning: --clip-length {args.clip_length} is ignored: "
                f"{cfg.MODEL.META_ARCHITECTURE} streams the video (its memory is bounded already)",
                file=sys.stderr,
            )
        state = predictor.init_state(source, video_id=args.video_id, max_frames=args.max_frames or None)
        mode = "streaming" if predictor.streaming else "whole video"
        print(
            f"{state.name}: {state.num_frames} frames of {state.orig_size[1]}x{state.orig_size[0]}, model "
            f"{cfg.MODEL.META_ARCHITECTURE} on {predictor.device} ({mode}, input "
            f"{state.video.image_size[1]}x{state.video.image_size[0]})"
        )
        result = predictor.predict(state=state, source=source, progress=not args.no_progress)
        json_path = _write_results(result, predictor.category_ids(result), out)
        video_path = None
        if video_out is not None:
            video_path = render_result_streaming(
                video_out,
                iter(state.source),
                result,
                [t.track_id for t in result.tracks],
                classes=predictor.classes,
                score_threshold=args.score_threshold,
                fps=args.fps or state.fps,
                progress=not args.no_progress,
                total=state.num_frames,
            )
    except (DatasetError, PredictorError, CheckpointError, ConfigError) as e:
        return _error(e)
    _print_tracks(result, predictor.classes, args.score_threshold)
    print(f"results: {json_path}")
    if video_path is not None:
        print(f"video:   {video_path}")
    return 0


def _video_path(source: Path, out: Path, no_render: bool) -> Path | None:
    """``out/<source name>.mp4``, or ``<name>_pred.mp4`` where that is the source itself."""
    if no_render:
        return None
    name = source.stem if source.is_file() else source.resolve().name
    path = out / f"{name}.mp4"
    if source.is_file() and path.exists() and path.resolve() == source.resolve():
        path = out / f"{name}_pred.mp4"
    return path


def _write_results(result, label_to_category_id, out: Path) -> Path:
    """``out/results.json`` (+ ``results.zip``) through the evaluation package's writer when present."""
    try:
        from vidseg.evaluation import official_entries, write_results
    except ImportError:  # the evaluation package is optional for prediction: plain JSON then
        import json

        out.mkdir(parents=True, exist_ok=True)
        path = out / "results.json"
        path.write_text(json.dumps(result.to_official(label_to_category_id)), encoding="utf-8")
        return path
    json_path, _ = write_results(official_entries([result], label_to_category_id), out)
    return Path(json_path)


def _just_below(x: float) -> float:
    """``x`` rounded down to two significant digits (a threshold that keeps a track scoring ``x``)."""
    if not x > 0 or not math.isfinite(x):
        return 0.0
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return float(f"{math.floor(x / step) * step:.2g}")


def _print_tracks(result, classes, threshold: float) -> None:
    shown = [t for t in result.tracks if t.score >= threshold]
    print(f"{len(result.tracks)} tracks, {len(shown)} with score >= {threshold:g}" + (":" if shown else ""))
    if result.tracks and not shown:
        best = sorted(result.tracks, key=lambda t: -t.score)[:5]
        listed = ", ".join(f"{t.score:.3g} (track {t.track_id})" for t in best)
        print(
            f"  the best scores are {listed}; nothing is drawn or listed: lower the threshold with "
            f"--score-threshold {_just_below(best[0].score):g} (results.json keeps every track)"
        )
    if shown:
        print(f"  {'id':>4}  {'class':<20} {'score':>6}  frames")
    for t in shown:
        name = classes[t.label] if classes is not None and 0 <= t.label < len(classes) else f"class {t.label}"
        present = [i for i, m in enumerate(t.masks) if m]
        span = f"{present[0]}-{present[-1]} ({len(present)})" if present else "-"
        print(f"  {t.track_id:>4}  {name:<20} {t.score:6.3f}  {span}")
