"""Per-image DETR targets from the clip batches of the data pipeline (image stage: clips of T=1 frame)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

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
