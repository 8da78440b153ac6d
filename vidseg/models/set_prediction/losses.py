"""Loss functions shared by the set criteria of the DETR family (DETR, Deformable DETR, DeVIS, Mask2Former).

All losses take *logits* and are normalised by ``num_boxes`` (the number of ground-truth objects, averaged
over ranks), so that a batch with many objects does not dominate the gradient. The normalisation conventions
follow DeVIS/Deformable DETR exactly (see ``docs/losses.md``):

- focal loss for masks: mean over pixels per object, summed over objects, divided by ``num_boxes``;
- focal loss for classes: summed over queries x classes, divided by ``num_boxes``;
- dice loss: ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per object, summed, divided by ``num_boxes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidseg.structures.box_ops import box_cxcywh_to_xyxy, elementwise_generalized_box_iou

__all__ = [
    "sigmoid_focal_loss_elementwise",
    "sigmoid_focal_loss",
    "dice_loss",
    "sigmoid_ce_loss",
    "focal_class_loss",
    "box_l1_loss",
    "box_giou_loss",
]


def sigmoid_focal_loss_elementwise(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Unreduced sigmoid focal loss (Lin et al., RetinaNet).

    ``FL = alpha_t (1 - p_t)^gamma * BCE(logits, targets)`` with ``p_t = p t + (1-p)(1-t)`` and
    ``alpha_t = alpha t + (1-alpha)(1-t)``; ``alpha < 0`` disables the class balancing.

    Args:
        logits: any shape, float.
        targets: same shape, values in [0, 1].
    Returns:
        the loss per element, same shape as ``logits``.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss of per-object predictions: mean over the second dimension, sum over objects, / num_boxes.

    Args:
        logits: ``[N, P]`` (e.g. N matched objects x P pixels).
        targets: ``[N, P]`` in [0, 1].
        num_boxes: normaliser (>= 1).
    Returns:
        scalar tensor.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"sigmoid_focal_loss: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}"
        )
    if logits.numel() == 0:
        return logits.sum()
    loss = sigmoid_focal_loss_elementwise(logits, targets, alpha, gamma)
    return loss.flatten(1).mean(1).sum() / num_boxes


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Dice loss (a soft IoU for masks), ``+1`` smoothed, summed over objects, / num_boxes.

    Args:
        logits: ``[N, P]`` mask logits.
        targets: ``[N, P]`` binary targets (float).
    Returns:
        scalar tensor.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"dice_loss: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}")
    if logits.numel() == 0:
        return logits.sum()
    prob = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy of per-object logits: mean over points, sum over objects, / num_masks.

    Args:
        logits: ``[N, P]`` (N matched masks x P pixels or sampled points).
        targets: ``[N, P]`` in [0, 1].
    Returns:
        scalar tensor.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"sigmoid_ce_loss: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}")
    if logits.numel() == 0:
        return logits.sum()
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.flatten(1).mean(1).sum() / num_masks


def focal_class_loss(
    logits: torch.Tensor,
    target_classes: torch.Tensor,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sigmoid focal classification loss over all queries and classes, summed and divided by ``num_boxes``.

    Args:
        logits: ``[B, Q, K]`` class logits (no background column: focal loss treats every class
            independently).
        target_classes: ``[B, Q]`` int64 in ``0..K``; the value ``K`` means "no object" (an all-zero target
            row).
    Returns:
        scalar tensor.
    """
    b, q, k = logits.shape
    onehot = torch.zeros((b, q, k + 1), dtype=logits.dtype, device=logits.device)
    onehot.scatter_(2, target_classes.unsqueeze(-1), 1)
    onehot = onehot[..., :k]
    return sigmoid_focal_loss_elementwise(logits, onehot, alpha, gamma).sum() / num_boxes


def box_l1_loss(src_boxes: torch.Tensor, tgt_boxes: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Summed L1 distance of matched boxes ``[N, 4]`` (any format, same for both), / num_boxes."""
    return F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes


def box_giou_loss(src_boxes: torch.Tensor, tgt_boxes: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """``sum(1 - GIoU)`` of matched normalised cxcywh boxes ``[N, 4]``, / num_boxes."""
    giou = elementwise_generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return (1 - giou).sum() / num_boxes
