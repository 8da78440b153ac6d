"""The optional streaming protocol of a method's inference object, and the adapter for methods without it.

A method's ``ModelBundle.inference`` is always callable as ``inference(model, video) -> VideoResult``. A
method that can work frame by frame (clip-based DeVIS, online GRAtt-VIS) may also define::

    def stream(self, model: nn.Module, video: VideoItem) -> Iterator[FrameOutput]

Contract of ``stream`` (see docs/inference.md):

- it yields exactly one :class:`FrameOutput` per frame of ``video``, with ``frame_idx`` 0, 1, ..., n - 1;
- it reads frames lazily (``video.frames.get(indices)`` or ``video.clips(T, stride)``) and keeps at most a
  bounded window of frames and features, so memory does not grow with the video's length;
- ``track_ids`` are stable across frames (a track keeps its id from the frame it appears on);
- ``masks`` are bool ``[N, H0, W0]`` at the original size ``video.orig_size`` on the CPU;
- optionally, a final correction: a method whose track scores or categories are whole-video policies (DeVIS)
  returns its final :class:`VideoResult` from the generator (``StopIteration.value``); the predictor
  then uses it as the video's result instead of summarising the per-frame outputs. Such a method may set
  the class attribute ``stream_returns_result = True``, so that ``predict`` does not RLE-encode the per-frame
  masks for a summary it will not need.

Methods without ``stream`` are run whole through :func:`frames_from_result`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from vidseg.structures.masks import decode_segmentation
from vidseg.structures.results import FrameOutput, VideoResult  # there, method packages can yield it

__all__ = [
    "FrameOutput",
    "StreamingInference",
    "supports_streaming",
    "assign_track_ids",
    "frames_from_result",
]


@runtime_checkable
class StreamingInference(Protocol):
    """An inference object that can also stream per-frame outputs (see the module docstring)."""

    def __call__(self, model: nn.Module, video: Any) -> VideoResult: ...

    def stream(self, model: nn.Module, video: Any) -> Iterator[FrameOutput]: ...


def supports_streaming(inference: Any) -> bool:
    """True when ``inference`` has a callable ``stream`` method."""
    return callable(getattr(inference, "stream", None))


def assign_track_ids(result: VideoResult) -> list[int]:
    """One distinct id per track: the method's ``track_id`` when every track has one and they are distinct,
    else ``1..N`` in result order. (A method that keeps several (query, class) pairs of one query gives
    them the same query id; the renderer and the per-frame outputs need distinct ones.)"""
    ids = [t.track_id for t in result.tracks]
    if all(i is not None for i in ids) and len(set(ids)) == len(ids):
        return [int(i) for i in ids]
    return list(range(1, len(ids) + 1))


def frames_from_result(
    result: VideoResult, num_frames: int, track_ids: Sequence[int] | None = None
) -> Iterator[FrameOutput]:
    """Per-frame outputs of a whole-video :class:`VideoResult` (RLEs decoded one frame at a time).

    ``track_ids`` defaults to :func:`assign_track_ids`. Tracks shorter than ``num_frames`` are absent on the
    missing frames; a track with more frames raises ``ValueError``.
    """
    ids = list(track_ids) if track_ids is not None else assign_track_ids(result)
    h, w = result.height, result.width
    for k, tr in enumerate(result.tracks):
        if len(tr.masks) > num_frames:
            raise ValueError(
                f"video {result.video_id}: track {ids[k]} has {len(tr.masks)} frames, the video {num_frames}"
            )
    for t in range(num_frames):
        present, masks, scores, labels = [], [], [], []
        for k, tr in enumerate(result.tracks):
            rle = tr.masks[t] if t < len(tr.masks) else None
            m = decode_segmentation(rle, h, w) if rle else None
            if m is None or not m.any():
                continue
            present.append(ids[k])
            masks.append(m)
            fs = tr.frame_scores[t] if tr.frame_scores is not None and t < len(tr.frame_scores) else None
            scores.append(float(tr.score if fs is None else fs))
            labels.append(int(tr.label))
        stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        yield FrameOutput(t, present, stacked, scores, labels)
