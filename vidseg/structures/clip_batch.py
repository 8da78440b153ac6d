"""Padded clip batches: what the data pipeline hands the model and the criterion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ClipTargets:
    """Ground truth of one clip, instance-major.

    Attributes:
        labels: ``[N]`` int64 contiguous class labels (0..K-1).
        ids: ``[N]`` int64 instance (track) ids from the dataset annotation ``id``.
        masks: ``[N, T, H, W]`` bool masks at the padded batch size (zeros on invalid frames).
        boxes: ``[N, T, 4]`` float boxes, normalised cxcywh w.r.t. the unpadded image size (0 when invalid).
        valid: ``[N, T]`` bool, True where the instance is visible in the frame.
        iscrowd: ``[N]`` bool.
    """

    labels: torch.Tensor
    ids: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    iscrowd: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ClipTargets:
        return ClipTargets(
            **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class ClipBatch:
    """A batch of B clips of T frames, padded to a size divisible by 32.

    Attributes:
        frames: ``[B, T, 3, H, W]`` float, normalised.
        pad_mask: ``[B, T, H, W]`` bool, True on padding pixels.
        targets: per clip :class:`ClipTargets` (training), else None.
        meta: per clip dict with keys ``video_id`` (int), ``frame_indices`` (list[int]), ``orig_size``
            ((h, w) of the video), ``image_size`` ((h, w) after resizing, before padding), ``file_names``.
    """

    frames: torch.Tensor
    pad_mask: torch.Tensor
    targets: list[ClipTargets] | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        return ClipBatch(
            frames=self.frames.to(device, non_blocking=non_blocking),
            pad_mask=self.pad_mask.to(device, non_blocking=non_blocking),
            targets=[t.to(device) for t in self.targets] if self.targets is not None else None,
            meta=self.meta,
        )

    @property
    def batch_size(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])


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


def frame_targets(t: ClipTargets, frame: int = 0) -> dict[str, torch.Tensor]:
    """Per-image (DETR-style) targets of one frame of a clip: what every image-level criterion reads.

    Instances not visible in ``frame`` and crowd regions are dropped (DETR and Mask2Former train without
    crowd instances).

    Args:
        t: ``ClipTargets`` with ``labels [N]``, ``boxes [N,T,4]``, ``masks [N,T,H,W]``, ``valid [N,T]``.
    Returns:
        ``{"labels" [N'] int64, "boxes" [N',4] normalised cxcywh, "masks" [N',H,W] bool}``.
    """
    if t.boxes.dim() != 3 or t.boxes.shape[-1] != 4:
        raise ValueError(f"ClipTargets.boxes must be [N,T,4], got {tuple(t.boxes.shape)}")
    if not 0 <= frame < t.boxes.shape[1]:
        raise ValueError(f"frame {frame} outside the clip of {t.boxes.shape[1]} frames")
    keep = t.valid[:, frame].bool()
    if t.iscrowd is not None:
        keep &= ~t.iscrowd.bool()
    return {
        "labels": t.labels[keep].long(),
        "boxes": t.boxes[keep, frame].float(),
        "masks": t.masks[keep, frame].bool(),
    }
