"""The Mask2Former criterion: weighted CE with a "no object" weight, and BCE + dice on importance-sampled
points, at the final layer and every aux layer (deep supervision).

Everything is composed from ``models/set_prediction``: :class:`SetCriterion` with :class:`CELabelLoss`
and :class:`PointMaskLoss`; the matcher is :class:`.matcher.MaskHungarianMatcher`. Per-frame targets of
video clips come from :func:`vidseg.structures.clip_batch.frame_targets`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from vidseg.models.set_prediction.criterion import ClipTargetsAdapter, SetCriterion
from vidseg.models.set_prediction.matched_losses import CELabelLoss, PointMaskLoss
from vidseg.structures.clip_batch import frame_targets

__all__ = ["mask2former_weight_dict", "mask2former_criterion", "FrameCriterion"]


def mask2former_weight_dict(
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    num_aux: int = 9,
) -> dict[str, float]:
    """``loss_ce``, ``loss_mask``, ``loss_dice``, and the same with the suffix ``_{i}`` for the aux layers
    ``i = 0..num_aux-1``."""
    base = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    out = dict(base)
    for i in range(num_aux):
        out.update({f"{k}_{i}": v for k, v in base.items()})
    return out


def mask2former_criterion(
    num_classes: int,
    matcher: nn.Module,
    weight_dict: Mapping[str, float],
    eos_coef: float = 0.1,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> SetCriterion:
    """A :class:`SetCriterion` with the ``labels`` (CE) and ``masks`` (point-sampled BCE + dice) terms."""
    return SetCriterion(
        matcher,
        weight_dict,
        {
            "labels": CELabelLoss(num_classes, eos_coef),
            "masks": PointMaskLoss(num_points, oversample_ratio, importance_sample_ratio),
        },
        required=("pred_logits", "pred_masks"),
    )


class FrameCriterion(ClipTargetsAdapter):
    """The per-frame criterion called with clip targets.

    The model flattens a batch of B clips of T frames to B*T images (clip-major); each ``ClipTargets`` gives
    T per-frame target dicts (:func:`frame_targets`). Plain per-image dicts pass through.
    """

    def __init__(self, criterion: SetCriterion) -> None:
        super().__init__(criterion, lambda t: [frame_targets(t, f) for f in range(t.masks.shape[1])])
