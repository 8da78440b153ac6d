"""Benchmark of the video predictor: whole-video inference (baseline) vs clip-by-clip streaming.

Each mode runs in a fresh subprocess on the same generated mp4 with the same random ToyVIS, so the peak
resident memory (ru_maxrss) of each is its own. Ratios are against the whole-video run of this invocation.

    python benchmarks/predictor.py                       # 120 frames of 320x240, clips of 6 (stride 3)
    python benchmarks/predictor.py --frames 300 --clip-length 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
import torch
from vidseg.models import get_cfg
from vidseg.inference import VideoPredictor
torch.manual_seed(0)
video, clip = sys.argv[1], int(sys.argv[2])
cfg = get_cfg("ToyVIS")
cfg.MODEL.TOY.NUM_CLASSES, cfg.MODEL.DEVICE = 3, "cpu"
cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 240, 320
p = VideoPredictor.from_config(cfg, "", clip_length=clip)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
r = p.predict(video, progress=False)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "peak_mb": peak / 1024, "growth_mb": (peak - base) / 1024,
                  "tracks": len(r.tracks)}))
"""


def _make_video(path: Path, n: int, h: int, w: int) -> None:
    import numpy as np

    from vidseg.data.video_io import write_video

    frames = []
    for t in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        x = (7 * t) % (w - 60)
        f[40:100, x : x + 60] = 210
        frames.append(f)
    write_video(path, frames, fps=10)


def _run(video: Path, clip: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(video), str(clip)], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--clip-length", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        _make_video(video, args.frames, *args.size)
        rows = [("whole video (baseline)", _run(video, 0))]
        rows.append((f"clips of {args.clip_length}, stitched", _run(video, args.clip_length)))
    base = rows[0][1]
    print(
        f"{args.frames} frames {args.size[1]}x{args.size[0]}, ToyVIS (random), "
        f"{platform.processor() or 'cpu'}"
    )
    print("| mode | s/frame | ratio | peak RSS MB | RSS growth MB | ratio |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['seconds'] / args.frames:.4f} | {r['seconds'] / base['seconds']:.2f}x "
            f"| {r['peak_mb']:.0f} | {r['growth_mb']:.0f} "
            f"| {r['growth_mb'] / max(base['growth_mb'], 1e-9):.2f}x |"
        )


if __name__ == "__main__":
    main()
