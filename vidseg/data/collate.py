"""Batching clips: pad frames (``structures.clip_batch.pad_frames``) and masks to a common size divisible by
``INPUT.SIZE_DIVISIBILITY``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vidseg.structures.clip_batch import ClipBatch, ClipTargets, pad_frames

__all__ = ["collate_clips", "pad_frames"]


def _pad_targets(tg: ClipTargets, h: int, w: int) -> ClipTargets:
    n, t, mh, mw = tg.masks.shape
    masks = torch.zeros((n, t, h, w), dtype=torch.bool)
    masks[..., :mh, :mw] = tg.masks
    return ClipTargets(tg.labels, tg.ids, masks, tg.boxes, tg.valid, tg.iscrowd)


def collate_clips(samples: Sequence[dict[str, Any]], size_divisibility: int = 32) -> ClipBatch:
    """Samples ``{"frames", "targets" (ClipTargets or None), "meta"}`` -> :class:`ClipBatch`.

    Masks are zero-padded to the padded size; boxes stay normalised w.r.t. each clip's unpadded size. A
    sample's own ``pad_mask`` ``[T, H, W]`` (padding added by the augmentation: large-scale jitter) is kept in
    the batch's.
    """
    frames, pad_mask = pad_frames([s["frames"] for s in samples], size_divisibility)
    for b, s in enumerate(samples):
        if s.get("pad_mask") is not None:
            own = s["pad_mask"]
            pad_mask[b, :, : own.shape[-2], : own.shape[-1]] |= own
    h, w = frames.shape[-2:]
    targets = None
    if all(s.get("targets") is not None for s in samples):
        targets = [_pad_targets(s["targets"], h, w) for s in samples]
    return ClipBatch(
        frames=frames, pad_mask=pad_mask, targets=targets, meta=[dict(s["meta"]) for s in samples]
    )
