"""Batching clips: pad frames and masks to a common size divisible by ``INPUT.SIZE_DIVISIBILITY``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vidseg.structures.clip_batch import ClipBatch, ClipTargets

__all__ = ["collate_clips", "pad_frames"]


def pad_frames(
    frames: Sequence[torch.Tensor], size_divisibility: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack clips ``[T, 3, H_i, W_i]`` into ``[B, T, 3, H, W]`` (zero padding at the bottom/right) and the
    padding mask ``[B, T, H, W]`` (True on padding). H and W are the maxima rounded up to the divisibility."""
    t = frames[0].shape[0]
    if any(f.shape[0] != t for f in frames):
        raise ValueError(
            f"clips of a batch must have the same number of frames, got {[f.shape[0] for f in frames]}"
        )
    h = max(int(f.shape[-2]) for f in frames)
    w = max(int(f.shape[-1]) for f in frames)
    if size_divisibility > 1:
        h = int(math.ceil(h / size_divisibility) * size_divisibility)
        w = int(math.ceil(w / size_divisibility) * size_divisibility)
    out = frames[0].new_zeros((len(frames), t, 3, h, w))
    pad_mask = torch.ones((len(frames), t, h, w), dtype=torch.bool)
    for b, f in enumerate(frames):
        out[b, :, :, : f.shape[-2], : f.shape[-1]] = f
        pad_mask[b, :, : f.shape[-2], : f.shape[-1]] = False
    return out, pad_mask


def _pad_targets(tg: ClipTargets, h: int, w: int) -> ClipTargets:
    n, t, mh, mw = tg.masks.shape
    masks = torch.zeros((n, t, h, w), dtype=torch.bool)
    masks[..., :mh, :mw] = tg.masks
    return ClipTargets(tg.labels, tg.ids, masks, tg.boxes, tg.valid, tg.iscrowd)


def collate_clips(samples: Sequence[dict[str, Any]], size_divisibility: int = 32) -> ClipBatch:
    """Samples ``{"frames", "targets" (ClipTargets or None), "meta"}`` -> :class:`ClipBatch`.

    Masks are zero-padded to the padded size; boxes stay normalised w.r.t. each clip's unpadded size.
    """
    frames, pad_mask = pad_frames([s["frames"] for s in samples], size_divisibility)
    h, w = frames.shape[-2:]
    targets = None
    if all(s.get("targets") is not None for s in samples):
        targets = [_pad_targets(s["targets"], h, w) for s in samples]
    return ClipBatch(
        frames=frames, pad_mask=pad_mask, targets=targets, meta=[dict(s["meta"]) for s in samples]
    )
