"""Throughput of the training data pipeline on synthetic YouTube-VIS data (CPU, one process).

Prints clips/s for: loading only (JPEG decode + RLE decode + targets, the baseline), + DeVIS geometric
augmentation (flip, RandomSelect resize/crop), + GRAtt-VIS moving crop, + per-frame photometric distortion
(the full DeVIS recipe), and Mask2Former's large-scale jitter (flip, ResizeScale 0.1-2.0, FixedSizeCrop 1024
padded; the COCO detector stage, here on the same clips); ratios are against the baseline measured in the same
run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data_pipeline.py [--size 360x640] [--frames 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from vidseg.data.clip_dataset import ClipTrainDataset
from vidseg.data.large_scale_jitter import LargeScaleJitter
from vidseg.data.synthetic import generate_split
from vidseg.data.transforms import ClipAugmentation
from vidseg.data.ytvis import load_ytvis_json


def _rate(ds: ClipTrainDataset, n: int) -> float:
    ds[0]  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="360x640")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--clips", type=int, default=12)
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        js = generate_split(tmp, "train", 0, 4, 12, h, w, 5, progress=False)
        gen = time.perf_counter() - t0
        recs, _ = load_ytvis_json(js, js.parent / "JPEGImages")
        base = dict(min_sizes=(288, 320, 352, 392, 416, 448, 480, 512), max_size=768)
        setups = {
            "load + targets (baseline)": None,
            "+ flip/resize/crop (DeVIS geometry)": ClipAugmentation(**base, photometric=False),
            "+ moving crop (GRAtt-VIS geometry)": ClipAugmentation(
                **base, photometric=False, moving_crop=True
            ),
            "+ photometric (full DeVIS recipe)": ClipAugmentation(**base, photometric=True),
            "+ LSJ 1024 (Mask2Former COCO)": LargeScaleJitter(image_size=1024, min_scale=0.1, max_scale=2.0),
        }
        rows = []
        for name, aug in setups.items():
            ds = ClipTrainDataset(recs, args.frames, augmentation=aug, seed=0)
            rows.append((name, _rate(ds, args.clips)))
    print(f"synthetic data: 4 videos x 12 frames at {h}x{w} generated in {gen:.2f} s")
    print(f"clips of T={args.frames} frames at {h}x{w}, 1 process, torch threads 1")
    print(f"{'pipeline':40s} {'clips/s':>8s} {'frames/s':>9s} {'vs baseline':>12s}")
    for name, r in rows:
        print(f"{name:40s} {r:8.2f} {r * args.frames:9.1f} {r / rows[0][1]:11.2f}x")


if __name__ == "__main__":
    main()
