"""Draw instance masks over video frames: one colour and id per track, the class name (and score) per mask.

Works from a :class:`~vidseg.structures.results.VideoResult` (predictions) or a
:class:`~vidseg.data.records.VideoRecord` (ground truth). Frames are ``uint8 [H, W, 3]`` RGB.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidseg.data.records import VideoRecord
from vidseg.data.video_io import FrameSource, write_video
from vidseg.structures.masks import decode_segmentation
from vidseg.structures.results import VideoResult

__all__ = ["Overlay", "track_colour", "draw_overlays", "overlays_from_result", "overlays_from_record",
           "render_video", "render_result_to_file"]  # fmt: skip


@dataclass
class Overlay:
    """One mask to draw on one frame: ``mask [H, W]`` bool, its RGB colour and its label text."""

    mask: np.ndarray
    colour: tuple[int, int, int]
    text: str


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright colour per track id, well spread by the golden ratio over the hue circle."""
    h = (0.13 + 0.618034 * int(track_id)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _edges(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def draw_overlays(frame: np.ndarray, overlays: Sequence[Overlay], alpha: float = 0.45) -> np.ndarray:
    """Blend each mask in its colour, outline it, and write its text above its top-left corner."""
    out = frame.astype(np.float32)
    for ov in overlays:
        if ov.mask.shape != frame.shape[:2]:
            raise ValueError(f"mask size {ov.mask.shape} differs from the frame size {frame.shape[:2]}")
        col = np.asarray(ov.colour, np.float32)
        out[ov.mask] = (1 - alpha) * out[ov.mask] + alpha * col
        out[_edges(ov.mask)] = col
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for ov in overlays:
        ys, xs = np.nonzero(ov.mask)
        if not ys.size or not ov.text:
            continue
        x0, y0 = int(xs.min()), int(ys.min())
        box = draw.textbbox((0, 0), ov.text, font=font)
        tw, th = box[2] - box[0], box[3] - box[1]
        x = min(max(0, x0), max(0, img.width - tw - 2))
        y = y0 - th - 3 if y0 - th - 3 >= 0 else min(y0 + 1, max(0, img.height - th - 3))
        draw.rectangle([x, y, x + tw + 2, y + th + 3], fill=ov.colour)
        draw.text((x + 1, y), ov.text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def _name(classes: Sequence[str] | None, label: int) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else f"class {label}"


def overlays_from_result(
    result: VideoResult, classes: Sequence[str] | None = None, score_threshold: float = 0.0
) -> list[list[Overlay]]:
    """Per frame overlays of a predicted :class:`VideoResult` (tracks below ``score_threshold`` skipped)."""
    length = max((len(t.masks) for t in result.tracks), default=0)
    frames: list[list[Overlay]] = [[] for _ in range(length)]
    for k, tr in enumerate(result.tracks):
        if tr.score < score_threshold:
            continue
        tid = tr.track_id if tr.track_id is not None else k + 1
        text = f"{tid}: {_name(classes, tr.label)} {tr.score:.2f}"
        for t, rle in enumerate(tr.masks):
            m = decode_segmentation(rle, result.height, result.width) if rle else None
            if m is not None and m.any():
                frames[t].append(Overlay(m, track_colour(tid), text))
    return frames


def overlays_from_record(record: VideoRecord, classes: Sequence[str] | None = None) -> list[list[Overlay]]:
    """Per frame overlays of the ground truth of a video record (colour and id from the annotation id)."""
    frames: list[list[Overlay]] = [[] for _ in range(record.length)]
    for inst in record.instances:
        text = f"{inst.id}: {_name(classes, inst.label)}" + (" (crowd)" if inst.iscrowd else "")
        for t, segm in enumerate(inst.segmentations):
            m = decode_segmentation(segm, record.height, record.width)
            if m is not None and m.any():
                frames[t].append(Overlay(m, track_colour(inst.id), text))
    return frames


def render_video(frames: Iterable[np.ndarray], overlays: Sequence[Sequence[Overlay]]) -> list[np.ndarray]:
    """Draw per-frame overlays on frames (frames past the end of ``overlays`` are drawn bare)."""
    return [draw_overlays(f, overlays[t] if t < len(overlays) else []) for t, f in enumerate(frames)]


def render_result_to_file(
    out_path: str | os.PathLike,
    frames: FrameSource | Sequence[np.ndarray],
    result: VideoResult | VideoRecord,
    classes: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    fps: float = 5.0,
) -> Path:
    """Render a prediction (``VideoResult``) or the ground truth (``VideoRecord``) to ``.mp4`` or ``.gif``."""
    if isinstance(result, VideoRecord):
        overlays = overlays_from_record(result, classes)
    else:
        overlays = overlays_from_result(result, classes, score_threshold)
    return write_video(out_path, render_video(frames, overlays), fps=fps)
