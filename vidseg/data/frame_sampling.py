"""Which frames form a clip: training samplers (DeVIS consecutive, VITA/GenVIS reference + range) and
inference clip layouts (whole video, DeVIS overlapping clips with ``last_real_idx``).

All functions return frame indices into the video; randomness comes from the ``np.random.Generator``
passed in, never from global state (``dataset[i]`` depends only on (seed, epoch, i)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "pingpong_indices",
    "consecutive_items",
    "consecutive_clip",
    "reference_range_clip",
    "InferenceClip",
    "overlapping_clips",
]


def pingpong_indices(length: int, num: int, start: int = 0) -> list[int]:
    """``num`` indices from ``start`` going forward, reflecting at both ends without repeating the end frame.

    ``length=3, num=8 -> [0, 1, 2, 1, 0, 1, 2, 1]`` (DeVIS pads videos shorter than a clip this way).
    """
    if length <= 0:
        raise ValueError(f"video length must be positive, got {length}")
    if length == 1:
        return [0] * num
    period = 2 * (length - 1)
    out = []
    for k in range(num):
        p = (start + k) % period
        out.append(p if p < length else period - p)
    return out


def consecutive_items(
    lengths: Sequence[int], num_frames: int, each_frame: bool = False
) -> list[tuple[int, int]]:
    """DeVIS training items ``(video_index, start)``: every start with ``start + T <= length``.

    A video shorter than T contributes one item (start 0), padded by ping-pong in :func:`consecutive_clip`.
    The epoch length is ``sum(max(1, len - T + 1))``. ``each_frame`` (DeVIS ``SAMPLE_EACH_FRAME``): every
    frame is a start, epoch length ``sum(len)``; :func:`consecutive_clip` pads the tail with reflected frames.
    """
    items = []
    for v, n in enumerate(lengths):
        last = n if each_frame else max(1, n - num_frames + 1)
        items.extend((v, s) for s in range(last))
    return items


def consecutive_clip(length: int, start: int, num_frames: int) -> list[int]:
    """T consecutive frames from ``start``; ping-pong padded when they run past the end (a video shorter than
    T, or a late start with ``each_frame``): ``length=5, start=3, T=6 -> [3, 4, 3, 2, 1, 0]``."""
    if start + num_frames <= length:
        return list(range(start, start + num_frames))
    return pingpong_indices(length, num_frames, start)


def reference_range_clip(
    length: int, num_frames: int, frame_range: int, rng: np.random.Generator, shuffle: bool = False
) -> list[int]:
    """VITA/GenVIS/GRAtt-VIS sampling: a random reference frame r plus T-1 frames drawn *with replacement*
    from ``[r - range, r + range] \\ {r}`` (clipped to the video), sorted unless ``shuffle``.

    A one-frame video (a COCO pseudo-video) repeats its frame.
    """
    ref = int(rng.integers(length))
    lo, hi = max(0, ref - frame_range), min(length, ref + frame_range + 1)
    pool = np.array([i for i in range(lo, hi) if i != ref], dtype=np.int64)
    others = rng.choice(pool, num_frames - 1).tolist() if pool.size else [ref] * (num_frames - 1)
    idx = [ref, *others]
    if shuffle:
        rng.shuffle(idx)
    else:
        idx.sort()
    return [int(i) for i in idx]


@dataclass
class InferenceClip:
    """One clip of an inference pass over a video.

    Attributes:
        indices: frame indices, ``len == T`` (ping-pong padded for short videos).
        start: the index of the clip's first frame in the video.
        last_real_idx: 0 except for the last clip of a video longer than T: there it is the position inside
            the clip where the next regular clip (start ``k * S``) would have begun, i.e.
            ``next_start - (n - T)`` (DeVIS ``last_real_idx``). Positions before it were already covered by
            earlier clips; from it on the clip behaves like a regular one (its first ``T - S`` frames
            overlap).
        num_real: number of leading positions that are genuine distinct frames (< T only for short videos).
    """

    indices: list[int]
    start: int
    last_real_idx: int = 0
    num_real: int = 0


def overlapping_clips(length: int, num_frames: int, stride: int) -> list[InferenceClip]:
    """DeVIS clip layout: starts 0, S, 2S, ... while ``start + T < n``, then a final clip of the last T
    frames.

    Video length n < T: one ping-pong padded clip (results are cut to n); n == T: one clip.
    """
    if not 0 < stride <= num_frames:
        raise ValueError(f"stride must be in 1..{num_frames} (clip length), got {stride}")
    t = num_frames
    if length < t:
        return [InferenceClip(pingpong_indices(length, t), 0, 0, length)]
    if length == t:
        return [InferenceClip(list(range(t)), 0, 0, t)]
    clips = [InferenceClip(list(range(t)), 0, 0, t)]
    start = stride
    while start + t < length:
        clips.append(InferenceClip(list(range(start, start + t)), start, 0, t))
        start += stride
    last_start = length - t
    # `start` is where the next clip would have begun: frames before it are already covered.
    clips.append(InferenceClip(list(range(last_start, length)), last_start, start - last_start, t))
    return clips
