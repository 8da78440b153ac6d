"""Loss terms on matched (prediction, target) pairs, the ``loss_<name>`` entries of a :class:`SetCriterion`.

Each term is called as ``term(outputs, targets, indices, num_boxes) -> {loss_key: scalar}`` on one layer's
outputs (see :mod:`.criterion` for the keys). ``indices`` are B tuples ``(pred_idx, tgt_idx)`` (images) or
``(pred_idx, tgt_idx, valid)`` (DeVIS clips: one entry per matched slot and frame, ``valid`` false on frames
where the instance is absent).

- :class:`FocalLabelLoss`: sigmoid focal classification over all queries x classes (Deformable DETR, DeVIS).
- :class:`CELabelLoss`: softmax cross-entropy with a down-weighted "no object" class (DETR, Mask2Former).
- :class:`BoxLoss`: L1 and GIoU of normalised cxcywh boxes.
- :class:`FocalDiceMaskLoss`: focal + dice on full-resolution masks (DeVIS's mask head).
- :class:`PointMaskLoss`: BCE + dice on importance-sampled points (Mask2Former, VITA, GenVIS, GRAtt-VIS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from vidseg.models.set_prediction.losses import (
    box_giou_loss,
    box_l1_loss,
    dice_loss,
    focal_class_loss,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from vidseg.models.set_prediction.point_sampling import point_sample, uncertain_point_coords

__all__ = [
    "FocalLabelLoss",
    "CELabelLoss",
    "BoxLoss",
    "FocalDiceMaskLoss",
    "PointMaskLoss",
    "flatten_indices",
]

Targets = Sequence[Mapping[str, torch.Tensor]]


def flatten_indices(indices, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Concatenated per-image indices: ``(batch_idx, src_idx, tgt_idx, valid, pos_in_image)``, all ``[M]``."""
    batch, src, tgt, valid, pos = [], [], [], [], []
    for b, idx in enumerate(indices):
        s, t = idx[0].to(device), idx[1].to(device)
        v = idx[2].to(device).bool() if len(idx) > 2 else torch.ones_like(s, dtype=torch.bool)
        batch.append(torch.full_like(s, b))
        src.append(s)
        tgt.append(t)
        valid.append(v)
        pos.append(torch.arange(s.numel(), device=device))
    if not batch:
        e = torch.empty(0, dtype=torch.int64, device=device)
        return e, e, e, e.bool(), e
    return tuple(torch.cat(x) for x in (batch, src, tgt, valid, pos))


def supervised_pairs(num_images: int, batch_idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pairs that get box/mask losses, ``[M]`` bool: all pairs of images with at least one valid pair.

    DeVIS supervises the invalid frames of a visible instance too (with tiny boxes and empty masks); for
    images every pair is valid, so this keeps them all.
    """
    any_valid = torch.zeros(num_images, dtype=torch.bool, device=valid.device)
    if valid.numel():
        any_valid.index_put_((batch_idx,), valid, accumulate=True)
    return any_valid[batch_idx]


def target_offsets(targets: Targets, device: torch.device) -> torch.Tensor:
    """Start of each image's targets in the concatenation of all targets, ``[B]`` int64."""
    sizes = torch.as_tensor([len(t["labels"]) for t in targets], dtype=torch.int64, device=device)
    return torch.cumsum(sizes, 0) - sizes


def _matched_labels(logits: torch.Tensor, targets: Targets, indices, num_classes: int):
    """``[B, Q]`` target classes (``num_classes`` = no object) and the valid matched pairs."""
    batch_idx, src_idx, tgt_idx, valid, _ = flatten_indices(indices, logits.device)
    batch_idx, src_idx, tgt_idx = batch_idx[valid], src_idx[valid], tgt_idx[valid]
    target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
    labels = None
    if src_idx.numel():
        all_labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
        labels = all_labels[target_offsets(targets, logits.device)[batch_idx] + tgt_idx]
        target_classes[batch_idx, src_idx] = labels
    return target_classes, batch_idx, src_idx, labels


def _class_error(logits: torch.Tensor, batch_idx, src_idx, labels) -> torch.Tensor:
    """Top-1 error (%) of the matched queries; logged only."""
    with torch.no_grad():
        if labels is None:
            return torch.tensor(100.0, device=logits.device)
        correct = (logits[batch_idx, src_idx].argmax(-1) == labels).float().mean()
        return 100.0 * (1.0 - correct)


class FocalLabelLoss:
    """``loss_ce``: sigmoid focal loss over all queries x classes, positives at the valid matched pairs.

    Reads ``outputs["pred_logits"]`` ``[B, Q, K]`` (no background column). Also returns ``class_error``.
    """

    needs = ("pred_logits",)

    def __init__(self, num_classes: int, alpha: float = 0.25, gamma: float = 2.0) -> None:
        self.num_classes, self.alpha, self.gamma = num_classes, alpha, gamma

    def __call__(self, outputs, targets: Targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        logits = outputs["pred_logits"]
        target_classes, batch_idx, src_idx, labels = _matched_labels(
            logits, targets, indices, self.num_classes
        )
        loss = focal_class_loss(logits, target_classes, num_boxes, self.alpha, self.gamma)
        return {"loss_ce": loss, "class_error": _class_error(logits, batch_idx, src_idx, labels)}


class CELabelLoss:
    """``loss_ce``: softmax cross-entropy over ``K+1`` classes, the "no object" class weighted ``eos_coef``.

    Reads ``outputs["pred_logits"]`` ``[B, Q, K+1]``. The mean is weighted (``F.cross_entropy`` with class
    weights), as DETR and Mask2Former do, so it is not divided by ``num_boxes``.
    """

    needs = ("pred_logits",)

    def __init__(self, num_classes: int, eos_coef: float = 0.1) -> None:
        self.num_classes = num_classes
        self.empty_weight = torch.ones(num_classes + 1)
        self.empty_weight[-1] = eos_coef

    def __call__(self, outputs, targets: Targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        logits = outputs["pred_logits"]
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"CELabelLoss: pred_logits has {logits.shape[-1]} classes, "
                f"expected K+1 = {self.num_classes + 1}"
            )
        target_classes, batch_idx, src_idx, labels = _matched_labels(
            logits, targets, indices, self.num_classes
        )
        weight = self.empty_weight.to(device=logits.device, dtype=logits.dtype)
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, weight)
        return {"loss_ce": loss, "class_error": _class_error(logits, batch_idx, src_idx, labels)}


class BoxLoss:
    """``loss_bbox`` (L1) and ``loss_giou`` over the supervised matched pairs (``outputs["pred_boxes"]``)."""

    needs = ("pred_boxes",)

    def __call__(self, outputs, targets: Targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        boxes = outputs["pred_boxes"]
        batch_idx, src_idx, tgt_idx, valid, _ = flatten_indices(indices, boxes.device)
        keep = supervised_pairs(len(indices), batch_idx, valid)
        batch_idx, src_idx, tgt_idx = batch_idx[keep], src_idx[keep], tgt_idx[keep]
        if src_idx.numel() == 0:
            zero = boxes.sum() * 0.0  # keeps the graph connected (DDP) while contributing nothing
            return {"loss_bbox": zero, "loss_giou": zero}
        all_tgt = torch.cat([t["boxes"] for t in targets]).to(boxes)
        tgt = all_tgt[target_offsets(targets, boxes.device)[batch_idx] + tgt_idx]
        src = boxes[batch_idx, src_idx]
        return {
            "loss_bbox": box_l1_loss(src, tgt, num_boxes),
            "loss_giou": box_giou_loss(src, tgt, num_boxes),
        }


def _matched_mask_logits(pred: torch.Tensor, indices, batch_idx, pos) -> torch.Tensor:
    """The mask logits of the matched pairs, ``[M, h, w]``, from either layout of ``pred_masks``.

    ``[B, N_sel, h, w]``: row b's first ``len(indices[b][0])`` entries are the masks of ``indices[b][0]``;
    ``[M, h, w]``: one mask per matched pair in the concatenated order of ``indices``.
    """
    if pred.dim() == 4:
        counts = [int(idx[0].numel()) for idx in indices]
        if pred.shape[0] != len(indices) or pred.shape[1] < max([0, *counts]):
            raise ValueError(
                f"SetCriterion: 'pred_masks' has shape {tuple(pred.shape)}; expected [B={len(indices)}, "
                f"N_sel>={max([0, *counts])}, h, w] (matched queries first, in the order of 'indices')"
            )
        return pred[batch_idx, pos]
    if pred.dim() == 3:
        if pred.shape[0] != batch_idx.numel():
            raise ValueError(
                f"SetCriterion: flat 'pred_masks' {tuple(pred.shape)} needs one mask per matched pair "
                f"({batch_idx.numel()})"
            )
        return pred
    raise ValueError(f"SetCriterion: 'pred_masks' must be 3-d or 4-d, got {tuple(pred.shape)}")


def padded_target_masks(
    targets: Targets, batch_idx: torch.Tensor, tgt_idx: torch.Tensor, device
) -> torch.Tensor:
    """The selected target masks, zero-padded (bottom/right) to the batch's largest mask, ``[M, H, W]``."""
    sizes = [tuple(t["masks"].shape[-2:]) for t in targets if "masks" in t]
    if len(sizes) != len(targets):
        raise KeyError("SetCriterion: the 'masks' loss needs targets[b]['masks'] for every image")
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    out = torch.zeros((batch_idx.numel(), h, w), dtype=torch.float32, device=device)
    for b in torch.unique(batch_idx).tolist():
        sel = (batch_idx == b).nonzero().flatten()
        m = targets[b]["masks"]
        out[sel, : m.shape[-2], : m.shape[-1]] = m[tgt_idx[sel].to(m.device)].to(
            device=device, dtype=out.dtype
        )
    return out


class FocalDiceMaskLoss:
    """``loss_mask`` (focal, mean over pixels) and ``loss_dice`` of matched pairs at the target resolution.

    Reads ``outputs["pred_masks"]`` (either layout of :func:`_matched_mask_logits`); the logits are bilinearly
    upsampled to the target masks ``targets[b]["masks"]`` ``[G, H, W]``.
    """

    needs = ("pred_masks",)

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        self.alpha, self.gamma = alpha, gamma

    def __call__(self, outputs, targets: Targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        pred = outputs["pred_masks"]
        batch_idx, _, tgt_idx, valid, pos = flatten_indices(indices, pred.device)
        keep = supervised_pairs(len(indices), batch_idx, valid)
        src = _matched_mask_logits(pred, indices, batch_idx, pos)
        src, batch_idx, tgt_idx = src[keep], batch_idx[keep], tgt_idx[keep]
        if src.shape[0] == 0:
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        tgt_masks = padded_target_masks(targets, batch_idx, tgt_idx, pred.device).to(src.dtype)
        src = F.interpolate(src.unsqueeze(1), size=tgt_masks.shape[-2:], mode="bilinear", align_corners=False)
        src, tgt_masks = src.flatten(1), tgt_masks.flatten(1)
        return {
            "loss_mask": sigmoid_focal_loss(src, tgt_masks, num_boxes, self.alpha, self.gamma),
            "loss_dice": dice_loss(src, tgt_masks, num_boxes),
        }


class PointMaskLoss:
    """``loss_mask`` (sigmoid BCE) and ``loss_dice`` on ``num_points`` sampled points per matched mask.

    Points are chosen by :func:`uncertain_point_coords` on the predicted logits (importance sampling, as in
    PointRend and Mask2Former), then both the prediction and the target are read there with
    :func:`point_sample`. ``outputs["pred_masks"]`` is ``[B, Q, h, w]`` (all queries, read at ``pred_idx``).
    """

    needs = ("pred_masks",)

    def __init__(
        self, num_points: int = 12544, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75
    ) -> None:
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def __call__(self, outputs, targets: Targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        pred = outputs["pred_masks"]
        batch_idx, src_idx, tgt_idx, _, _ = flatten_indices(indices, pred.device)
        if src_idx.numel() == 0:
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        src = pred[batch_idx, src_idx][:, None]  # [M, 1, h, w]
        tgt = padded_target_masks(targets, batch_idx, tgt_idx, pred.device).to(src.dtype)[:, None]
        with torch.no_grad():
            coords = uncertain_point_coords(
                src, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            tgt_points = point_sample(tgt, coords).squeeze(1)
        src_points = point_sample(src, coords).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(src_points, tgt_points, num_boxes),
            "loss_dice": dice_loss(src_points, tgt_points, num_boxes),
        }
