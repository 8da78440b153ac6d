"""A synthetic video instance segmentation dataset in the exact YouTube-VIS layout (tests, quickstart).

Layout written under ``out_dir`` (the YouTube-VIS 2021 layout, one JSON per split named ``instances.json``)::

    out_dir/train/JPEGImages/<video>/00000.jpg, 00005.jpg, ...
    out_dir/train/instances.json
    out_dir/valid/JPEGImages/<video>/...
    out_dir/valid/instances.json      # WITH annotations, so the split can be scored

Frames are named like YouTube-VIS (every 5th frame number) so readers never assume consecutive file names.
Each class is one shape with one colour and one stripe texture (learnable: class <-> look is consistent).
Objects move, scale, rotate, enter and leave the frame and occlude each other in a fixed depth order over a
textured background that pans like a camera. Per-frame GT: uncompressed RLE (like the official GT files) of
the *visible* part, ``areas`` (pixel counts), ``bboxes`` ``[x, y, w, h]``; ``None`` where the object is
absent. Everything is drawn from ``np.random.default_rng([seed, split, video])``: the same seed gives
byte-identical JSON and JPEG files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from vidseg.structures.masks import encode_uncompressed_rle, mask_to_xywh

__all__ = ["SHAPES", "generate_synthetic_dataset", "generate_split"]

SHAPES = ("ellipse", "rectangle", "triangle", "star", "diamond", "cross", "hexagon", "ring")
# Saturated class colours (RGB) against low-saturation backgrounds.
_CLASS_COLOURS = (
    (225, 50, 50),
    (40, 180, 70),
    (50, 90, 230),
    (240, 205, 30),
    (200, 60, 210),
    (30, 210, 220),
    (250, 135, 20),
    (245, 245, 245),
)
FRAME_STEP = 5  # frame file numbers 00000, 00005, ... as in YouTube-VIS
MIN_VISIBLE_AREA = 6  # pixels; a smaller visible part is annotated as absent (None)


def _unit_polygon(shape: str) -> list[np.ndarray]:
    """Outline(s) of a shape of radius ~1 centred at 0: ``[outer [P,2]]``, or ``[outer, hole]`` (ring)."""
    if shape in ("ellipse", "ring"):
        a = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        outer = np.stack([1.25 * np.cos(a), 0.85 * np.sin(a)], 1)
        return [outer, outer * 0.5] if shape == "ring" else [outer]
    if shape == "rectangle":
        return [np.array([[-1.2, -0.75], [1.2, -0.75], [1.2, 0.75], [-1.2, 0.75]])]
    if shape == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [np.stack([1.2 * np.cos(a), -1.2 * np.sin(a)], 1)]
    if shape == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.3, 0.55)
        return [np.stack([r * np.cos(a), -r * np.sin(a)], 1)]
    if shape == "diamond":
        return [np.array([[0.0, -1.3], [0.8, 0.0], [0.0, 1.3], [-0.8, 0.0]])]
    if shape == "cross":
        s, t = 1.2, 0.4
        pts = [
            (-t, -s),
            (t, -s),
            (t, -t),
            (s, -t),
            (s, t),
            (t, t),
            (t, s),
            (-t, s),
            (-t, t),
            (-s, t),
            (-s, -t),
        ]
        return [np.array([*pts, (-t, -t)], dtype=float)]
    if shape == "hexagon":
        a = np.arange(6) * np.pi / 3
        return [np.stack([1.1 * np.cos(a), 1.1 * np.sin(a)], 1)]
    raise ValueError(f"unknown shape {shape!r}")


@dataclass
class _Instance:
    label: int
    center0: np.ndarray  # [2] x, y at t=0 (pixels)
    velocity: np.ndarray  # [2] pixels / frame
    radius0: float
    growth: float  # relative radius change per frame
    angle0: float
    spin: float  # radians / frame
    t_start: int
    t_end: int  # inclusive
    shade: float  # per-instance brightness jitter

    def geometry(self, t: int) -> tuple[np.ndarray, float, float]:
        radius = self.radius0 * max(0.4, 1.0 + self.growth * t)
        return self.center0 + self.velocity * t, radius, self.angle0 + self.spin * t


def _sample_instance(rng: np.random.Generator, k: int, t_len: int, h: int, w: int, anchor: bool) -> _Instance:
    side = min(h, w)
    # The anchor instance stays in the frame for the whole video, so no video is empty.
    margin = 0.25 if anchor else -0.1
    center0 = np.array([rng.uniform(margin, 1 - margin) * w, rng.uniform(margin, 1 - margin) * h])
    speed = rng.uniform(0.01, 0.035 if anchor else 0.06) * side
    heading = rng.uniform(0, 2 * np.pi)
    if anchor or rng.random() < 0.6:
        t_start, t_end = 0, t_len - 1
    else:
        t_start = int(rng.integers(0, max(1, t_len - 2)))
        t_end = int(rng.integers(min(t_start + 2, t_len - 1), t_len))
    return _Instance(
        label=k,
        center0=center0,
        velocity=speed * np.array([math.cos(heading), math.sin(heading)]),
        radius0=rng.uniform(0.11, 0.2) * side,
        growth=rng.uniform(-0.03, 0.03),
        angle0=rng.uniform(0, 2 * np.pi),
        spin=rng.uniform(-0.12, 0.12),
        t_start=t_start,
        t_end=t_end,
        shade=rng.uniform(0.85, 1.1),
    )


def _background(rng: np.random.Generator, h: int, w: int, pad: int) -> np.ndarray:
    """A muted textured canvas ``[h + 2 pad, w + 2 pad, 3]`` float32 (camera pans inside it)."""
    hh, ww = h + 2 * pad, w + 2 * pad
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    c0, c1 = rng.uniform(60, 170, 3), rng.uniform(60, 170, 3)
    g = rng.uniform(0, 2 * np.pi)
    ramp = (xx * math.cos(g) + yy * math.sin(g)) / math.hypot(hh, ww) + 0.5
    img = c0 + (c1 - c0) * ramp[..., None]
    # Low-frequency blotches: a small random grid upsampled bilinearly.
    grid = rng.uniform(-35, 35, (4, 6, 3)).astype(np.float32)
    blotch = np.stack(
        [np.asarray(Image.fromarray(grid[..., c]).resize((ww, hh), Image.BILINEAR)) for c in range(3)], -1
    )
    period, th = rng.uniform(8, 30), rng.uniform(0, np.pi)
    waves = 12 * np.sin(2 * np.pi * (xx * math.cos(th) + yy * math.sin(th)) / period)
    img = img + blotch + waves[..., None]
    # Pull towards grey: backgrounds stay less saturated than objects.
    grey = img.mean(-1, keepdims=True)
    return (0.55 * img + 0.45 * grey).astype(np.float32)


def _render_video(rng: np.random.Generator, t_len: int, h: int, w: int, num_classes: int, max_instances: int):
    """Frames ``[T, h, w, 3]`` uint8 and per instance (label, visible masks ``[T, h, w]`` bool)."""
    pad = max(8, min(h, w) // 6)
    canvas = _background(rng, h, w, pad)
    cam0 = rng.uniform(0, 2 * pad, 2)
    cam_v = rng.uniform(-1.0, 1.0, 2)
    n = int(rng.integers(1, max_instances + 1))
    insts = [
        _sample_instance(rng, int(rng.integers(num_classes)), t_len, h, w, anchor=i == 0) for i in range(n)
    ]
    order = rng.permutation(n)  # depth: earlier in `order` is farther back
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t_len, h, w, 3), np.uint8)
    full = np.zeros((n, t_len, h, w), bool)
    for t in range(t_len):
        ox, oy = np.clip(cam0 + cam_v * t, 0, 2 * pad).astype(int)
        img = canvas[oy : oy + h, ox : ox + w].copy()
        for i in order:
            inst = insts[i]
            if not inst.t_start <= t <= inst.t_end:
                continue
            center, radius, angle = inst.geometry(t)
            rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            layer = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(layer)
            for j, poly in enumerate(_unit_polygon(SHAPES[inst.label])):
                pts = (poly * radius) @ rot.T + center
                draw.polygon([(float(x), float(y)) for x, y in pts], fill=0 if j else 1)
            m = np.asarray(layer, dtype=bool)
            if not m.any():
                continue
            full[i, t] = m
            # Class texture: stripes fixed to the object (they rotate with it), period and angle per class.
            phase = angle + inst.label * np.pi / max(1, num_classes)
            u = (xx - center[0]) * math.cos(phase) + (yy - center[1]) * math.sin(phase)
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * u / (4.0 + 1.5 * inst.label))
            colour = np.asarray(_CLASS_COLOURS[inst.label], np.float32) * inst.shade
            img[m] = colour * (0.7 + 0.3 * stripes[m, None])
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    # Visible part: remove everything drawn in front (later in the depth order).
    visible = full.copy()
    for rank, i in enumerate(order):
        for j in order[rank + 1 :]:
            visible[i] &= ~full[j]
    return frames, [(insts[i].label, visible[i]) for i in range(n)]


def _video_name(split: str, index: int) -> str:
    return f"{split}_{index:04d}"


def generate_split(
    out_dir: str | Path,
    split: str,
    seed: int,
    num_videos: int,
    num_frames: int | Sequence[int],
    height: int,
    width: int,
    num_classes: int,
    max_instances: int = 4,
    jpeg_quality: int = 92,
    progress: bool = True,
) -> Path:
    """Write ``out_dir/<split>/JPEGImages`` and ``out_dir/<split>/instances.json``; returns the JSON path."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    lo, hi = (
        (num_frames, num_frames) if isinstance(num_frames, int) else (int(num_frames[0]), int(num_frames[1]))
    )
    if lo < 1 or hi < lo:
        raise ValueError(f"num_frames must be >= 1 (or a range lo <= hi), got {num_frames}")
    split_root = Path(out_dir) / split
    img_root = split_root / "JPEGImages"
    split_code = {"train": 0, "valid": 1}.get(split, sum(map(ord, split)))
    videos, annotations = [], []
    for v in tqdm(range(num_videos), desc=f"synth {split}", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, split_code, v])
        t_len = int(rng.integers(lo, hi + 1))
        frames, insts = _render_video(rng, t_len, height, width, num_classes, max_instances)
        name = _video_name(split, v)
        (img_root / name).mkdir(parents=True, exist_ok=True)
        file_names = []
        for t in range(t_len):
            rel = f"{name}/{t * FRAME_STEP:05d}.jpg"
            Image.fromarray(frames[t]).save(img_root / rel, quality=jpeg_quality)
            file_names.append(rel)
        video_id = v + 1
        videos.append(
            {"id": video_id, "width": width, "height": height, "length": t_len, "file_names": file_names}
        )
        for label, masks in insts:
            areas = masks.reshape(t_len, -1).sum(1)
            present = areas >= MIN_VISIBLE_AREA
            if not present.any():
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": label + 1,
                    "iscrowd": 0,
                    "width": width,
                    "height": height,
                    "length": t_len,
                    "segmentations": [
                        encode_uncompressed_rle(m) if p else None for m, p in zip(masks, present)
                    ],
                    "areas": [int(a) if p else None for a, p in zip(areas, present)],
                    "bboxes": [mask_to_xywh(m) if p else None for m, p in zip(masks, present)],
                }
            )
    data = {
        "info": {
            "description": f"vidseg synthetic VIS dataset (seed {seed}, split {split})",
            "version": "1.0",
        },
        "licenses": [],
        "videos": videos,
        "categories": [
            {"id": k + 1, "name": SHAPES[k], "supercategory": "shape"} for k in range(num_classes)
        ],
        "annotations": annotations,
    }
    json_path = split_root / "instances.json"
    json_path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    return json_path


def generate_synthetic_dataset(
    out_dir: str | Path,
    seed: int = 0,
    num_videos_train: int = 12,
    num_videos_val: int = 4,
    num_frames: int | Sequence[int] = (8, 12),
    height: int = 96,
    width: int = 160,
    num_classes: int = 4,
    max_instances: int = 4,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the train and valid splits; returns ``{"train_json", "train_images", "val_json", "val_images"}``.

    ``num_frames`` is a fixed length or an inclusive ``(min, max)`` range drawn per video.
    """
    out = Path(out_dir)
    kw = dict(
        seed=seed,
        num_frames=num_frames,
        height=height,
        width=width,
        num_classes=num_classes,
        max_instances=max_instances,
        progress=progress,
    )
    train_json = generate_split(out, "train", num_videos=num_videos_train, **kw)
    val_json = generate_split(out, "valid", num_videos=num_videos_val, **kw)
    return {
        "train_json": train_json,
        "train_images": train_json.parent / "JPEGImages",
        "val_json": val_json,
        "val_images": val_json.parent / "JPEGImages",
    }
