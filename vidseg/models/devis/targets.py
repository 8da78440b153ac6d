"""Per-image DETR targets from the clip batches of the data pipeline (image stage: clips of T=1 frame)."""

from __future__ import annotations

from torch import Tensor, nn

from vidseg.models.set_prediction.criterion import ClipTargetsAdapter
from vidseg.structures.clip_batch import ClipBatch, ClipTargets, frame_targets

__all__ = ["image_targets_from_clip", "image_targets_from_batch", "ImageCriterion"]


def image_targets_from_clip(t: ClipTargets, frame: int = 0) -> dict[str, Tensor]:
    """DETR-style targets of one frame of a clip (:func:`vidseg.structures.clip_batch.frame_targets`)."""
    return frame_targets(t, frame)


def image_targets_from_batch(batch: ClipBatch) -> list[dict[str, Tensor]]:
    """One target dict per clip of a T=1 batch (see :func:`image_targets_from_clip`)."""
    if batch.targets is None:
        raise ValueError("ClipBatch has no targets")
    return [image_targets_from_clip(t) for t in batch.targets]


class ImageCriterion(ClipTargetsAdapter):
    """The image-stage criterion called with ``ClipTargets``: one target dict per clip of one frame
    (:func:`image_targets_from_clip`)."""

    def __init__(self, criterion: nn.Module):
        super().__init__(criterion, lambda t: [image_targets_from_clip(t)])
