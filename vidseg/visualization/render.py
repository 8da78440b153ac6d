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

__all__ = ["Overlay", "track_colour", "draw_overlays", "place_labels", "overlays_from_result",
           "overlays_from_record", "render_video", "render_result_to_file"]  # fmt: skip


@dataclass
class Overlay:
    """One mask to draw on one frame: ``mask [H, W]`` bool, its RGB colour and its label text. Labels are
    placed by decreasing ``priority`` (the track score): the best track gets the best spot."""

    mask: np.ndarray
    colour: tuple[int, int, int]
    text: str
    priority: float = 0.0


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


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _overlap(a: Box, b: Box) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(
    masks: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], priority: Sequence[float] | None = None
) -> list[Box | None]:
    """A box for each label: at its own mask, inside the frame, clear of the other labels where possible.

    Args:
        masks: ``bool [H, W]`` per label (all of one frame).
        sizes: ``(width, height)`` of each label box.
        priority: labels are placed in decreasing order (the best first); default: the given order.

    Returns:
        per label ``(x0, y0, x1, y1)`` in pixels (None for an empty mask). Candidates, in order: above the
        mask (centred on it, then at its left and right ends), below it, on its centre and the rows around
        it, beside it; each clamped into the frame. The first that meets no placed label wins, else the one
        that overlaps placed labels least.
    """
    n = len(masks)
    order = sorted(range(n), key=lambda i: -(priority[i] if priority is not None else -i))
    placed: list[Box] = []
    out: list[Box | None] = [None] * n
    for i in order:
        m = masks[i]
        ys, xs = np.nonzero(m)
        if not ys.size:
            continue
        fh, fw = m.shape
        w, h = sizes[i]
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        cx, cy = int(xs.mean()), int(ys.mean())
        mid, up, down = cx - w // 2, y0 - h - 1, y1 + 1
        cands = [(mid, up), (x0, up), (x1 - w, up), (mid, down), (x0, down), (x1 - w, down)]
        cands += [(mid, cy - h // 2 + k * (h + 1)) for k in (0, -1, 1, -2, 2, -3, 3)]
        cands += [(x1 + 1, cy - h // 2), (x0 - w - 1, cy - h // 2)]
        best, best_cost = None, None
        for cx0, cy0 in cands:
            bx = min(max(0, cx0), max(0, fw - w))
            by = min(max(0, cy0), max(0, fh - h))
            box = (bx, by, bx + w, by + h)
            cost = sum(_overlap(box, p) for p in placed)
            if best_cost is None or cost < best_cost:
                best, best_cost = box, cost
            if cost == 0:
                break
        assert best is not None
        placed.append(best)
        out[i] = best
    return out


def draw_overlays(frame: np.ndarray, overlays: Sequence[Overlay], alpha: float = 0.45) -> np.ndarray:
    """Blend each mask in its colour, outline it, and write its text at it (see :func:`place_labels`)."""
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
    labelled = [ov for ov in overlays if ov.text]
    sizes = []
    for ov in labelled:
        box = draw.textbbox((0, 0), ov.text, font=font)
        sizes.append((box[2] - box[0] + 3, box[3] - box[1] + 4))
    boxes = place_labels([ov.mask for ov in labelled], sizes, [ov.priority for ov in labelled])
    # The best label is drawn last: where labels cannot all be kept apart, it stays readable.
    for ov, box in sorted(zip(labelled, boxes), key=lambda p: p[0].priority):
        if box is None:
            continue
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=ov.colour)
        draw.text((box[0] + 1, box[1]), ov.text, fill=(0, 0, 0), font=font)
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
                frames[t].append(Overlay(m, track_colour(tid), text, float(tr.score)))
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
