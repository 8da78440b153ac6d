"""Hungarian clip matcher and set criterion of the toy model (class CE, mask BCE, mask dice).

The mask-count normaliser is all-reduced over ranks (like DETR's ``num_boxes``), so every rank divides by the
same number and the DDP-averaged gradient equals the single-process one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.set_prediction.costs import dice_cost, sigmoid_ce_cost, softmax_class_cost
from vidseg.models.set_prediction.criterion import mean_object_count
from vidseg.models.set_prediction.hungarian import assign
from vidseg.models.set_prediction.losses import dice_loss, sigmoid_ce_loss
from vidseg.structures.clip_batch import ClipTargets


def _gt_masks(t: ClipTargets, size: tuple[int, int]) -> torch.Tensor:
    """``[N, T, h, w]`` float GT at the prediction size (area-averaged, so small objects keep soft pixels)."""
    m = t.masks.float()
    n, tt = m.shape[:2]
    if n == 0:
        return m.new_zeros((0, tt, *size))
    return F.adaptive_avg_pool2d(m.flatten(0, 1), size).reshape(n, tt, *size)


class ToyMatcher(nn.Module):
    """Matches queries to GT instances of one clip; costs are computed over all frames of the clip."""

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0) -> None:
        super().__init__()
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, gt: torch.Tensor):
        """``logits [Q, K+1]``, ``masks [Q, P]`` logits, ``labels [N]``, ``gt [N, P]`` -> (query, gt) idx."""
        if labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty
        cost = (
            self.cost_class * softmax_class_cost(logits, labels)
            + self.cost_mask * sigmoid_ce_cost(masks, gt)
            + self.cost_dice * dice_cost(masks, gt)
        )
        # Non-finite predictions must surface as a non-finite loss the trainer can name, not as a scipy error.
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
        return assign(cost, "ToyMatcher")


class ToyCriterion(nn.Module):
    """Set loss over ``outputs`` (and each ``aux_outputs`` entry, with suffix ``_{i}``).

    Returns unweighted ``loss_ce``, ``loss_mask``, ``loss_dice`` (+ ``_{i}``); ``weight_dict`` has weights.
    ``last_num_masks`` keeps the (all-reduced) normaliser of the last call, for inspection and tests.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: ToyMatcher,
        weight_dict: dict[str, float],
        eos_coef: float = 0.1,
        num_aux: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        for i in range(num_aux):
            self.weight_dict.update({f"{k}_{i}": v for k, v in weight_dict.items()})
        w = torch.ones(num_classes + 1)
        w[-1] = eos_coef
        self.register_buffer("empty_weight", w)
        self.last_num_masks = 0.0

    def _single(
        self, out: dict, gts: list[torch.Tensor], targets: list[ClipTargets], num_masks: float
    ) -> dict:
        logits, masks = out["pred_logits"], out["pred_masks"]  # [B, Q, K+1], [B, Q, T, h, w]
        tgt_cls = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        src_m, tgt_m = [], []
        for b, (t, gt) in enumerate(zip(targets, gts)):
            pm = masks[b].flatten(1)
            qi, gi = self.matcher(logits[b], pm, t.labels, gt.flatten(1))
            qi, gi = qi.to(logits.device), gi.to(logits.device)
            tgt_cls[b, qi] = t.labels[gi]
            src_m.append(pm[qi])
            tgt_m.append(gt.flatten(1)[gi])
        loss_ce = F.cross_entropy(logits.float().transpose(1, 2), tgt_cls, self.empty_weight)
        src, tgt = torch.cat(src_m).float(), torch.cat(tgt_m)
        if src.shape[0] == 0:
            zero = masks.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
        return {
            "loss_ce": loss_ce,
            "loss_mask": sigmoid_ce_loss(src, tgt, num_masks),
            "loss_dice": dice_loss(src, tgt, num_masks),
        }

    def forward(self, outputs: dict, targets: list[ClipTargets]) -> dict[str, torch.Tensor]:
        size = tuple(outputs["pred_masks"].shape[-2:])
        gts = [_gt_masks(t, size) for t in targets]
        n = float(sum(len(t) for t in targets))
        num_masks = mean_object_count(n, outputs["pred_logits"].device)
        self.last_num_masks = num_masks
        losses = self._single(outputs, gts, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self._single(aux, gts, targets, num_masks).items()})
        return losses
