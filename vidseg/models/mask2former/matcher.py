"""Hungarian matching of Mask2Former: softmax class cost + BCE and dice on shared random points.

For image ``b`` with targets ``G_b``, ``num_points`` uniform points are drawn once and shared by every
prediction and every target mask; the cost is::

    C[q, g] = w_class * (-softmax(logits_q)[c_g]) + w_mask * BCE(m_q, t_g) + w_dice * dice(m_q, t_g)

(terms in :mod:`vidseg.models.set_prediction.costs`, assignment by :func:`.hungarian.assign`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vidseg.models.set_prediction.costs import dice_cost, sigmoid_ce_cost, softmax_class_cost
from vidseg.models.set_prediction.hungarian import Indices, assign
from vidseg.models.set_prediction.point_sampling import point_sample

__all__ = ["MaskHungarianMatcher"]


class MaskHungarianMatcher(nn.Module):
    """One-to-one assignment of mask queries to target masks, per image (no parameters).

    Args:
        cost_class / cost_mask / cost_dice: the weights (2 / 5 / 5).
        num_points: points shared by all masks of an image (12544 = 112 x 112).
        generator: optional ``torch.Generator`` for the points (tests); None uses the global RNG.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("MaskHungarianMatcher: all costs are 0 (MODEL.MASK_FORMER.*_WEIGHT)")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points
        self.generator = generator

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"num_points={self.num_points}"
        )

    @torch.no_grad()
    def cost_matrix(
        self, logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor, tgt_masks: torch.Tensor
    ) -> torch.Tensor:
        """``[Q, G]`` cost of one image.

        Args:
            logits: ``[Q, K+1]``; pred_masks: ``[Q, h, w]`` logits; labels: ``[G]``; tgt_masks: ``[G, H, W]``
                (any size: both are read at the same normalised points).
        """
        coords = torch.rand(1, self.num_points, 2, device=pred_masks.device, generator=self.generator)
        tgt = point_sample(tgt_masks[:, None].float(), coords.expand(tgt_masks.shape[0], -1, -1))[:, 0]
        pred = point_sample(pred_masks[:, None].float(), coords.expand(pred_masks.shape[0], -1, -1))[:, 0]
        return (
            self.cost_class * softmax_class_cost(logits, labels)
            + self.cost_mask * sigmoid_ce_cost(pred, tgt)
            + self.cost_dice * dice_cost(pred, tgt)
        )

    @torch.no_grad()
    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> Indices:
        """Match every image of the batch.

        Args:
            outputs: ``"pred_logits"`` ``[B, Q, K+1]`` and ``"pred_masks"`` ``[B, Q, h, w]``.
            targets: B dicts with ``"labels"`` ``[G_b]`` and ``"masks"`` ``[G_b, H, W]``.
        Returns:
            B tuples ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, G_b)``, ``pred_idx``
            ascending; images without targets give two empty tensors.
        """
        for key in ("pred_logits", "pred_masks"):
            if key not in outputs:
                raise KeyError(f"MaskHungarianMatcher: outputs has no {key!r} (keys: {sorted(outputs)})")
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"MaskHungarianMatcher: {len(targets)} targets for a batch of {logits.shape[0]}")
        empty = torch.empty(0, dtype=torch.int64)
        out: Indices = []
        for b, t in enumerate(targets):
            if t["labels"].numel() == 0:
                out.append((empty, empty))
                continue
            if t["masks"].shape[0] != t["labels"].shape[0]:
                raise ValueError(
                    f"MaskHungarianMatcher: targets[{b}] has {t['masks'].shape[0]} masks for "
                    f"{t['labels'].shape[0]} labels"
                )
            cost = self.cost_matrix(
                logits[b], masks[b], t["labels"].to(logits.device), t["masks"].to(masks.device)
            )
            out.append(assign(cost, "MaskHungarianMatcher"))
        return out
