"""DeVIS clip matching (devis.md §3.3): trajectories of instance-aware queries against GT instances.

Also :func:`pad_matched_queries`, which turns the matching into the query rows the mask head runs on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vidseg.models.set_prediction.costs import focal_class_cost, smoothed_giou
from vidseg.models.set_prediction.hungarian import Indices, assign
from vidseg.structures.box_ops import box_cxcywh_to_xyxy

__all__ = ["ClipHungarianMatcher", "pad_matched_queries"]


class ClipHungarianMatcher(nn.Module):
    """DeVIS clip matching (devis.md §3.3): a trajectory (slot ``i`` in every frame) against a GT instance.

    Queries are frame-major (``q = t * Nq + i``); targets are instance-major (``g * T + t``). Per (slot,
    instance) the cost is the class focal cost at the GT class averaged over the T frames, the L1 distance
    averaged over frames and coordinates, and ``-mean_t GIoU`` (smoothed); invalid frames take part with their
    placeholder boxes, as in DeVIS.

    Args:
        num_frames: T.
        use_l1_distance_sum: sum the L1 distance over the 4 coordinates instead of averaging
            (``MODEL.MATCHER.USE_SUM_L1_DISTANCE``).
    """

    def __init__(
        self,
        num_frames: int,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        use_l1_distance_sum: bool = False,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("ClipHungarianMatcher: all costs are 0 (MODEL.MATCHER.*_COST)")
        self.num_frames = num_frames
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.use_l1_distance_sum = use_l1_distance_sum

    @torch.no_grad()
    def cost_matrix(
        self, logits: torch.Tensor, boxes: torch.Tensor, tgt_labels: torch.Tensor, tgt_boxes: torch.Tensor
    ) -> torch.Tensor:
        """Cost ``[Nq, N]`` between slots and instances of one clip.

        Args:
            logits: ``[T*Nq, K]`` and boxes ``[T*Nq, 4]`` (frame-major).
            tgt_labels: ``[N]`` class per instance; tgt_boxes: ``[N*T, 4]`` (instance-major).
        """
        t = self.num_frames
        nq = logits.shape[0] // t
        n = tgt_labels.shape[0]
        prob = logits.float().sigmoid().view(t, nq, -1)
        cost_class = focal_class_cost(prob[:, :, tgt_labels], self.focal_alpha, self.focal_gamma).mean(0)
        pb = boxes.float().view(t, nq, 4).permute(1, 0, 2)[:, None]  # [Nq, 1, T, 4]
        tb = tgt_boxes.float().view(n, t, 4)[None]  # [1, N, T, 4]
        l1 = (pb - tb).abs()
        cost_bbox = l1.sum(-1).mean(-1) if self.use_l1_distance_sum else l1.mean((-1, -2))
        cost_giou = -smoothed_giou(box_cxcywh_to_xyxy(pb), box_cxcywh_to_xyxy(tb)).mean(-1)
        return self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Match every clip of the batch.

        Args:
            outputs: ``"pred_logits"`` ``[B, T*Nq, K]``, ``"pred_boxes"`` ``[B, T*Nq, 4]`` (frame-major).
            targets: per clip ``"labels"`` ``[N*T]`` (or ``[N]``), ``"boxes"`` ``[N*T, 4]``, ``"valid"``
                ``[N*T]`` bool, all instance-major.
        Returns:
            per clip ``(pred_idx, tgt_idx, valid)``, each ``[N*T]``: for the j-th matched (slot i,
            instance g), entries ``j*T + t`` are ``t*Nq + i``, ``g*T + t`` and the frame's valid flag. A clip
            without instances gets DeVIS's dummy match (slot 0 in every frame, all invalid), which the
            criterion ignores.
        """
        t = self.num_frames
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if logits.shape[1] % t:
            raise ValueError(f"ClipHungarianMatcher: {logits.shape[1]} queries not divisible by T={t}")
        nq = logits.shape[1] // t
        frames = torch.arange(t)
        indices = []
        for b, tgt in enumerate(targets):
            boxes_t = tgt["boxes"]
            if boxes_t.shape[0] % t:
                raise ValueError(
                    f"ClipHungarianMatcher: targets[{b}]['boxes'] has {boxes_t.shape[0]} rows, not N*T"
                )
            n = boxes_t.shape[0] // t
            if n == 0:
                indices.append((frames * nq, frames.clone(), torch.zeros(t, dtype=torch.bool)))
                continue
            labels = tgt["labels"]
            labels = labels.view(n, t)[:, 0] if labels.shape[0] == n * t else labels
            cost = self.cost_matrix(logits[b], boxes[b], labels.to(logits.device), boxes_t.to(boxes.device))
            slots, inst = assign(cost, "ClipHungarianMatcher")
            valid = tgt["valid"].bool().view(n, t).cpu()
            pred_idx = (frames[None] * nq + slots[:, None]).flatten()
            tgt_idx = (inst[:, None] * t + frames[None]).flatten()
            indices.append((pred_idx, tgt_idx, valid[inst].flatten()))
        return indices


def pad_matched_queries(indices: Indices, num_queries: int) -> tuple[torch.Tensor, list[int]]:
    """Query indices for the mask head during training: the matched queries of every image, padded to a common
    length with unmatched queries (their masks are computed but ignored by the criterion).

    Args:
        indices: B tuples ``(pred_idx, tgt_idx)`` from the matcher.
        num_queries: Q.
    Returns:
        ``query_idx`` ``[B, N_max]`` int64 (row b starts with ``indices[b][0]`` in order) and the per-image
        counts of real entries ``[n_b]``. ``N_max >= 1`` so that the mask head always has an input.
    """
    counts = [int(idx[0].numel()) for idx in indices]
    n_max = max([1, *counts])
    rows = []
    for pred_idx, _ in indices:
        used = torch.zeros(num_queries, dtype=torch.bool)
        used[pred_idx] = True
        # Deterministic filling with the first unmatched queries (the official code draws them at random; the
        # choice does not change any loss since padded masks are dropped).
        fill = torch.nonzero(~used).flatten()[: n_max - pred_idx.numel()]
        rows.append(torch.cat([pred_idx.cpu(), fill]))
    return torch.stack(rows), counts
