"""``vidseg visualize``: render ground truth or a results JSON over the frames (mp4/gif)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = "Render ground-truth or predicted masks over the frames of videos, to .mp4 or .gif."
EPILOG = """\
--gt gives the videos (frame file names, sizes) and the class names; its annotations are drawn unless
--results is given, in which case the predictions are drawn instead. One colour and id per track; the class
name (and score) is written by each mask.

examples:
  vidseg visualize --gt datasets/synth/valid/instances.json \
      --images datasets/synth/valid/JPEGImages --out gt.mp4
  vidseg visualize --gt valid.json --results output/eval_results/results.json --images valid/JPEGImages \\
      --video 3 --video 7 --score-thr 0.3 --out pred.gif
With several videos, OUT gets a _<video_id> suffix per video.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gt", required=True, metavar="JSON", help="dataset JSON (videos, categories[, annotations])"
    )
    p.add_argument(
        "--results", metavar="JSON", help="results JSON (list of predicted tracks) to draw instead"
    )
    p.add_argument(
        "--images", required=True, metavar="ROOT", help="folder the JSON's file_names are relative to"
    )
    p.add_argument(
        "--video", type=int, action="append", metavar="ID", help="video id (repeatable; default: first)"
    )
    p.add_argument("--all", action="store_true", help="render every video")
    p.add_argument("--out", required=True, metavar="OUT", help="output .mp4 or .gif")
    p.add_argument("--score-thr", type=float, default=0.0, help="skip predicted tracks below this score")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second (default 5)")


def run(args: argparse.Namespace) -> int:
    from vidseg.data.errors import DatasetError
    from vidseg.data.video_io import FrameSource
    from vidseg.data.ytvis import load_ytvis_json
    from vidseg.evaluation.results_file import ResultsFileError, read_results
    from vidseg.structures.results import VideoResult
    from vidseg.visualization.render import render_result_to_file

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif", ".mkv", ".avi"):
        print(f"vidseg visualize: error: --out must end in .mp4 or .gif, got {out}", file=sys.stderr)
        return 2
    try:
        records, meta = load_ytvis_json(args.gt, args.images)
        by_id = {r.video_id: r for r in records}
        ids = list(by_id) if args.all else (args.video or [records[0].video_id])
        missing = [v for v in ids if v not in by_id]
        if missing:
            raise DatasetError(f"{args.gt}: video ids {missing} not found (known: {sorted(by_id)[:20]} ...)")
        sizes = {v: (r.height, r.width) for v, r in by_id.items()}
        results = read_results(args.results, sizes, meta.category_id_to_label) if args.results else None
        for vid in ids:
            rec = by_id[vid]
            target = out if len(ids) == 1 else out.with_name(f"{out.stem}_{vid}{out.suffix}")
            drawn: VideoResult | object = rec
            if results is not None:
                drawn = results.get(vid, VideoResult(vid, rec.height, rec.width, []))
            frames = FrameSource(files=rec.file_names, name=rec.describe())
            path = render_result_to_file(target, frames, drawn, meta.classes, args.score_thr, args.fps)
            print(f"video {rec.describe()}: {rec.length} frames -> {path}")
    except (DatasetError, ResultsFileError) as e:
        print(f"vidseg visualize: error: {e}", file=sys.stderr)
        return 1
    return 0
