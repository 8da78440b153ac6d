"""Pairwise matching costs between P predictions and G targets, ``-> [P, G]`` (lower is better).

The DETR family builds its Hungarian cost from these terms:

- class: focal "positive minus negative" cost on sigmoid probabilities (Deformable DETR, DeVIS), or minus the
  softmax probability of the target class (DETR, Mask2Former, VITA, GenVIS, GRAtt-VIS);
- box: L1 distance of normalised cxcywh boxes and minus the GIoU (with DeVIS's smoothed variant for clips);
- mask: sigmoid binary cross-entropy and dice on the same pixels or sampled points (Mask2Former).

Every function is a plain tensor function; matchers combine them with their weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidseg.structures.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = [
    "focal_class_cost",
    "softmax_class_cost",
    "box_l1_cost",
    "giou_cost",
    "smoothed_giou",
    "sigmoid_ce_cost",
    "dice_cost",
]


def focal_class_cost(prob: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal matching cost of predicting each class, ``[..., K] -> [..., K]``.

    ``FL+(p) - FL-(p)`` with ``FL+(p) = alpha (1-p)^gamma (-log(p + 1e-8))`` and
    ``FL-(p) = (1-alpha) p^gamma (-log(1-p + 1e-8))``.

    Args:
        prob: sigmoid probabilities (index the target classes first to get ``[P, G]``).
    """
    neg = (1 - alpha) * prob**gamma * (-(1 - prob + 1e-8).log())
    pos = alpha * (1 - prob) ** gamma * (-(prob + 1e-8).log())
    return pos - neg


def softmax_class_cost(logits: torch.Tensor, tgt_labels: torch.Tensor) -> torch.Tensor:
    """``-softmax(logits)[:, label]``: logits ``[P, K+1]`` (last column "no object"), labels ``[G]``.

    Returns ``[P, G]``.
    """
    return -logits.float().softmax(-1)[:, tgt_labels]


def box_l1_cost(pred_boxes: torch.Tensor, tgt_boxes: torch.Tensor) -> torch.Tensor:
    """L1 distance of ``[P, 4]`` and ``[G, 4]`` boxes (same format) -> ``[P, G]``."""
    return torch.cdist(pred_boxes.float(), tgt_boxes.float(), p=1)


def giou_cost(pred_boxes: torch.Tensor, tgt_boxes: torch.Tensor) -> torch.Tensor:
    """``-GIoU`` of normalised cxcywh boxes ``[P, 4]`` and ``[G, 4]`` -> ``[P, G]``."""
    return -generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes.float()), box_cxcywh_to_xyxy(tgt_boxes.float()))


def smoothed_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GIoU of broadcastable xyxy boxes ``[..., 4]`` with DeVIS's ``+eps`` smoothing, ``-> [...]``.

    ``(I+e)/(U+e) - (hull-U+e)/(hull+e)``: the smoothing keeps the tiny placeholder boxes of invalid frames
    finite.
    """
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1) - inter
    hull = (torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return (inter + eps) / (union + eps) - (hull - union + eps) / (hull + eps)


def sigmoid_ce_cost(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target mask.

    Args:
        pred: ``[P, N]`` mask logits on N pixels or sampled points.
        tgt: ``[G, N]`` targets in [0, 1] on the same points.
    Returns:
        ``[P, G]``; the BCE is split into its positive and negative parts so that it is two matrix products.
    """
    pred, tgt = pred.float(), tgt.float()
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ tgt.t() + neg @ (1 - tgt).t()) / max(pred.shape[1], 1)


def dice_cost(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """``1 - (2 p.t + 1) / (sum p + sum t + 1)`` of mask logits ``[P, N]`` and targets ``[G, N]``.

    Returns ``[P, G]``.
    """
    p = pred.float().sigmoid()
    tgt = tgt.float()
    return 1 - (2 * p @ tgt.t() + 1) / (p.sum(-1)[:, None] + tgt.sum(-1)[None] + 1)
