"""Hungarian clip matcher and set criterion of the toy model (class CE, mask BCE, mask dice).

The mask-count normaliser is all-reduced over ranks (like DETR's ``num_boxes``), so every rank divides by the
same number and the DDP-averaged gradient equals the single-process one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from vidseg.structures.clip_batch import ClipTargets
from vidseg.utils.dist import all_reduce_mean


def _gt_masks(t: ClipTargets, size: tuple[int, int]) -> torch.Tensor:
    """``[N, T, h, w]`` float GT at the prediction size (area-averaged, so small objects keep soft pixels)."""
    m = t.masks.float()
    n, tt = m.shape[:2]
    if n == 0:
        return m.new_zeros((0, tt, *size))
    return F.adaptive_avg_pool2d(m.flatten(0, 1), size).reshape(n, tt, *size)


def _dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-pair dice loss of sigmoid ``pred [N, P]`` logits and ``gt [N, P]`` -> ``[N]``."""
    p = pred.sigmoid()
    return 1 - (2 * (p * gt).sum(-1) + 1) / (p.sum(-1) + gt.sum(-1) + 1)


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
        prob = logits.float().softmax(-1)[:, labels]  # [Q, N]
        m = masks.float()
        pos = F.binary_cross_entropy_with_logits(m, torch.ones_like(m), reduction="none")
        neg = F.binary_cross_entropy_with_logits(m, torch.zeros_like(m), reduction="none")
        bce = (pos @ gt.t() + neg @ (1 - gt).t()) / m.shape[1]
        p = m.sigmoid()
        dice = 1 - (2 * p @ gt.t() + 1) / (p.sum(-1)[:, None] + gt.sum(-1)[None] + 1)
        cost = -self.cost_class * prob + self.cost_mask * bce + self.cost_dice * dice
        # Non-finite predictions must surface as a non-finite loss the trainer can name, not as a scipy error.
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
        qi, gi = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(qi, dtype=torch.int64), torch.as_tensor(gi, dtype=torch.int64)


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
        bce = F.binary_cross_entropy_with_logits(src, tgt, reduction="none").mean(1)
        return {
            "loss_ce": loss_ce,
            "loss_mask": bce.sum() / num_masks,
            "loss_dice": _dice(src, tgt).sum() / num_masks,
        }

    def forward(self, outputs: dict, targets: list[ClipTargets]) -> dict[str, torch.Tensor]:
        size = tuple(outputs["pred_masks"].shape[-2:])
        gts = [_gt_masks(t, size) for t in targets]
        n = float(sum(len(t) for t in targets))
        num_masks = max(all_reduce_mean(n, device=outputs["pred_logits"].device), 1.0)
        self.last_num_masks = num_masks
        losses = self._single(outputs, gts, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self._single(aux, gts, targets, num_masks).items()})
        return losses
