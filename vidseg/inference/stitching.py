"""Streaming for methods that only run on whole inputs: run them clip by clip and stitch tracks by mask IoU.

``ClipStitchingStream(inference, num_frames=T, stride=S)`` wraps any ``inference(model, video) ->
VideoResult`` (ToyVIS, or a method on videos too long for memory) into the streaming protocol. The video is
cut into the overlapping clips of :func:`vidseg.data.frame_sampling.overlapping_clips` (starts 0, S, 2S, ...;
a last clip of the last T frames). Each clip is a small ``VideoItem`` the wrapped inference runs on; its
tracks are matched to the running tracks by the mask IoU over the ``T - S`` frames the clips share (Hungarian,
IoU at least ``iou_threshold``), so a track keeps its id across clips. A frame is yielded as soon as no later
clip covers it, so at most one clip of frames and masks is held.

This is a generic stitcher, not DeVIS's tracker (which also uses class and box cues): a method with its own
tracking should implement ``stream`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from vidseg.data.frame_sampling import overlapping_clips
from vidseg.data.video_dataset import VideoFrames, VideoItem
from vidseg.inference.protocol import FrameOutput
from vidseg.structures.masks import decode_segmentation
from vidseg.structures.results import VideoResult

__all__ = ["ClipStitchingStream"]


class _FrameSubset:
    """Frames ``indices`` of another source, as a source of its own (what a clip's ``VideoItem`` reads)."""

    def __init__(self, source: Any, indices: Sequence[int], name: str) -> None:
        self.source, self.indices, self.name = source, list(indices), name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, t: int) -> np.ndarray:
        return self.source[self.indices[int(t)]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self[t]


def _clip_item(video: VideoItem, indices: Sequence[int]) -> VideoItem:
    f = video.frames
    sub = VideoFrames(
        _FrameSubset(f.source, indices, f.video),
        f.image_size,
        f.pixel_mean,
        f.pixel_std,
        f.input_format,
        f.expected_size,
        f.video,
    )
    return VideoItem(video.video_id, None, sub, video.orig_size, video.image_size)


class ClipStitchingStream:
    """Clip-by-clip streaming around a whole-input inference (see the module docstring).

    Args:
        inference: ``inference(model, video) -> VideoResult``.
        num_frames: clip length T; stride: S in 1..T (``T - S`` frames overlap).
        iou_threshold: least mask IoU over the shared frames for a clip track to continue a running track.
    """

    def __init__(self, inference: Any, num_frames: int, stride: int, iou_threshold: float = 0.3) -> None:
        if num_frames < 1 or not 0 < stride <= num_frames:
            raise ValueError(f"clip length {num_frames} and stride {stride}: need 1 <= stride <= length")
        self.inference = inference
        self.num_frames, self.stride, self.iou_threshold = num_frames, stride, iou_threshold

    def __call__(self, model: nn.Module, video: Any) -> VideoResult:
        return self.inference(model, video)

    def stream(self, model: nn.Module, video: VideoItem) -> Iterator[FrameOutput]:
        n = video.length
        h, w = video.orig_size
        clips = overlapping_clips(n, self.num_frames, self.stride)
        # pending[frame] = {track_id: (mask [H, W] bool, score, label)} for frames not yet yielded
        pending: dict[int, dict[int, tuple[np.ndarray, float, int]]] = {}
        next_id, emitted = 1, 0
        for k, clip in enumerate(clips):
            result = self.inference(model, _clip_item(video, clip.indices))
            first_pos: dict[int, int] = {}
            for p, t in enumerate(clip.indices):
                first_pos.setdefault(t, p)  # ping-pong padded short videos repeat frames
            frames = [t for t in sorted(first_pos) if t >= emitted]
            decoded = []  # per clip track: {frame: mask}
            for tr in result.tracks:
                masks = {}
                for t in frames:
                    rle = tr.masks[first_pos[t]] if first_pos[t] < len(tr.masks) else None
                    m = decode_segmentation(rle, h, w) if rle else None
                    if m is not None and m.any():
                        masks[t] = m
                decoded.append(masks)
            ids = self._match(decoded, pending)
            for j, (tr, masks) in enumerate(zip(result.tracks, decoded)):
                if not masks:
                    continue  # absent on every frame still to come: no id is spent on it
                if ids[j] is None:
                    ids[j], next_id = next_id, next_id + 1
                for t, m in masks.items():
                    # Frames shared with the previous clip keep the earlier clip's mask of a continued track.
                    pending.setdefault(t, {}).setdefault(ids[j], (m, float(tr.score), int(tr.label)))
            done = clips[k + 1].start if k + 1 < len(clips) else n
            while emitted < done:
                yield self._frame_output(emitted, pending.pop(emitted, {}), h, w)
                emitted += 1

    def _match(self, decoded: list[dict[int, np.ndarray]], pending: dict) -> list[int | None]:
        """Running track id for each clip track (None: a new track), by mask IoU over the shared frames."""
        running = sorted({tid for per in pending.values() for tid in per})
        out: list[int | None] = [None] * len(decoded)
        if not running or not decoded:
            return out
        iou = np.zeros((len(decoded), len(running)))
        for j, masks in enumerate(decoded):
            for i, tid in enumerate(running):
                inter = union = 0
                for t, per in pending.items():
                    a = per[tid][0] if tid in per else None
                    b = masks.get(t)
                    if a is None and b is None:
                        continue
                    if a is None or b is None:
                        union += int((a if b is None else b).sum())
                        continue
                    inter += int((a & b).sum())
                    union += int((a | b).sum())
                iou[j, i] = inter / union if union else 0.0
        rows, cols = linear_sum_assignment(-iou)
        for j, i in zip(rows, cols):
            if iou[j, i] >= self.iou_threshold:
                out[j] = running[i]
        return out

    @staticmethod
    def _frame_output(t: int, per: dict[int, tuple[np.ndarray, float, int]], h: int, w: int) -> FrameOutput:
        tids = sorted(per)
        if not tids:
            return FrameOutput(t, [], torch.zeros((0, h, w), dtype=torch.bool), [], [])
        masks = torch.from_numpy(np.stack([per[i][0] for i in tids]))
        return FrameOutput(t, tids, masks, [per[i][1] for i in tids], [per[i][2] for i in tids])
