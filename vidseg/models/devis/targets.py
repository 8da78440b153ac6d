"""Per-image DETR targets from the clip batches of the data pipeline (image stage: clips of T=1 frame)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from vidseg.structures.clip_batch import ClipBatch, ClipTargets

__all__ = ["image_targets_from_clip", "image_targets_from_batch", "ImageCriterion"]


def image_targets_from_clip(t: ClipTargets, frame: int = 0) -> dict[str, Tensor]:
    """DETR-style targets of one frame of a clip.

    Instances not visible in ``frame`` and crowd regions are dropped (DETR trains without crowd boxes).

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


def image_targets_from_batch(batch: ClipBatch) -> list[dict[str, Tensor]]:
    """One target dict per clip of a T=1 batch (see :func:`image_targets_from_clip`)."""
    if batch.targets is None:
        raise ValueError("ClipBatch has no targets")
    return [image_targets_from_clip(t) for t in batch.targets]


class ImageCriterion(nn.Module):
    """Adapter that lets the engine call an image criterion with ``ClipTargets`` (or with per-image dicts).

    ``forward(outputs, targets)`` converts ``ClipTargets`` via :func:`image_targets_from_clip` and returns the
    wrapped criterion's unweighted losses; ``weight_dict`` is the wrapped one.
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    @property
    def weight_dict(self) -> dict[str, float]:
        return self.criterion.weight_dict

    def forward(
        self, outputs: Mapping, targets: Sequence[ClipTargets | Mapping[str, Tensor]]
    ) -> dict[str, Tensor]:
        conv = [image_targets_from_clip(t) if isinstance(t, ClipTargets) else t for t in targets]
        return self.criterion(outputs, conv)
