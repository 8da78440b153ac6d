"""Hungarian matching of queries to ground-truth boxes, per image (DETR / Deformable DETR, focal class cost).

The cost of assigning query ``q`` to ground-truth object ``g`` is::

    C[q, g] = w_class * (FL+(p[q, c_g]) - FL-(p[q, c_g]))   # focal "positive minus negative" cost
            + w_bbox  * ||b_q - b_g||_1                       # normalised cxcywh
            - w_giou  * GIoU(b_q, b_g)

(terms in :mod:`vidseg.models.set_prediction.costs`); the assignment is :func:`.hungarian.assign_batch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vidseg.models.set_prediction.costs import box_l1_cost, focal_class_cost, giou_cost
from vidseg.models.set_prediction.hungarian import Indices, assign_batch

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth objects, per image.

    Has no parameters; an ``nn.Module`` only so that models can hold it as an attribute (it never appears in a
    state dict).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0 (MODEL.MATCHER.*_COST)")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def extra_repr(self) -> str:
        return f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}"

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_boxes: torch.Tensor,
    ) -> torch.Tensor:
        """Matching cost between ``P`` predictions and ``G`` targets.

        Args:
            pred_logits: ``[P, K]`` class logits.
            pred_boxes: ``[P, 4]`` normalised cxcywh.
            tgt_labels: ``[G]`` int64 in ``0..K-1``.
            tgt_boxes: ``[G, 4]`` normalised cxcywh.
        Returns:
            ``[P, G]`` float cost.
        """
        prob = pred_logits.float().sigmoid()
        cost_class = focal_class_cost(prob[:, tgt_labels], self.focal_alpha, self.focal_gamma)
        cost_bbox = box_l1_cost(pred_boxes, tgt_boxes)
        cost_giou = giou_cost(pred_boxes, tgt_boxes)
        return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> Indices:
        """Match every image of the batch.

        Args:
            outputs: ``"pred_logits"`` ``[B, Q, K]`` and ``"pred_boxes"`` ``[B, Q, 4]`` (normalised cxcywh);
                other keys are ignored.
            targets: B dicts with ``"labels"`` ``[G_b]`` int64 and ``"boxes"`` ``[G_b, 4]`` (normalised
                cxcywh).
        Returns:
            B tuples ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, G_b)``; ``pred_idx`` is
            sorted ascending and ``tgt_idx[j]`` is the target matched to query ``pred_idx[j]``. Images without
            targets give two empty tensors.
        """
        for key in ("pred_logits", "pred_boxes"):
            if key not in outputs:
                raise KeyError(f"HungarianMatcher: outputs has no {key!r} (keys: {sorted(outputs)})")
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        if len(targets) != bs:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {bs}")
        sizes = [int(t["labels"].shape[0]) for t in targets]
        for b, t in enumerate(targets):
            if t["boxes"].shape != (sizes[b], 4):
                raise ValueError(
                    f"HungarianMatcher: targets[{b}]['boxes'] has shape {tuple(t['boxes'].shape)}, "
                    f"expected ({sizes[b]}, 4) to match 'labels'"
                )
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(bs)]

        # One cost matrix for the whole batch ([B*Q, sum G]); each image then only reads its own block.
        tgt_labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.device)
        cost = self.cost_matrix(logits.flatten(0, 1), boxes.flatten(0, 1), tgt_labels, tgt_boxes)
        cost = cost.view(bs, num_queries, -1).cpu()
        if not torch.isfinite(cost).all():
            raise ValueError(
                "HungarianMatcher: the cost matrix has NaN/inf entries (non-finite predictions?)"
            )
        return assign_batch(cost, sizes, "HungarianMatcher")
