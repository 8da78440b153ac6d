"""Hungarian matching between predictions and ground truth (DETR style, focal class cost).

The cost of assigning query ``q`` to ground-truth object ``g`` is::

    C[q, g] = w_class * (FL+(p[q, c_g]) - FL-(p[q, c_g]))   # focal "positive minus negative" cost
            + w_bbox  * ||b_q - b_g||_1                       # normalised cxcywh
            - w_giou  * GIoU(b_q, b_g)

with ``FL+(p) = alpha (1-p)^gamma (-log(p + 1e-8))`` and ``FL-(p) = (1-alpha) p^gamma (-log(1-p + 1e-8))``.
The optimal one-to-one assignment comes from ``scipy.optimize.linear_sum_assignment`` per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from vidseg.structures.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = [
    "HungarianMatcher",
    "ClipHungarianMatcher",
    "focal_class_cost",
    "smoothed_giou",
    "build_matcher",
    "build_clip_matcher",
    "pad_matched_queries",
]

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def focal_class_cost(prob: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal matching cost of predicting each class, ``[..., K] -> [..., K]`` (lower is better).

    Args:
        prob: sigmoid probabilities.
    """
    neg = (1 - alpha) * prob**gamma * (-(1 - prob + 1e-8).log())
    pos = alpha * (1 - prob) ** gamma * (-(prob + 1e-8).log())
    return pos - neg


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
        pred_boxes = pred_boxes.float()
        tgt_boxes = tgt_boxes.float()
        cost_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> Indices:
        """Match every image of the batch.

        Args:
            outputs: ``"pred_logits"`` ``[B, Q, K]`` and ``"pred_boxes"`` ``[B, Q, 4]`` (normalised
            cxcywh); other
                keys are ignored.
            targets: B dicts with ``"labels"`` ``[G_b]`` int64 and ``"boxes"`` ``[G_b, 4]`` (normalised
            cxcywh).
        Returns:
            B tuples ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, G_b)``; ``pred_idx``
            is sorted
            ascending and ``tgt_idx[j]`` is the target matched to query ``pred_idx[j]``. Images without
            targets
            give two empty tensors.
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
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
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

        indices: Indices = []
        for b, block in enumerate(cost.split(sizes, -1)):
            if sizes[b] == 0:
                indices.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(block[b].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices


def smoothed_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GIoU of broadcastable xyxy boxes ``[..., 4]`` with DeVIS's ``+eps`` smoothing (``(I+e)/(U+e)`` and
    ``(hull-U+e)/(hull+e)``), which keeps the tiny boxes of invalid frames finite. Returns ``[...]``."""
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1) - inter
    hull = (torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return (inter + eps) / (union + eps) - (hull - union + eps) / (hull + eps)


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
        """
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
            cost = self.cost_matrix(
                logits[b], boxes[b], labels.to(logits.device), boxes_t.to(boxes.device)
            ).cpu()
            if not torch.isfinite(cost).all():
                raise ValueError("ClipHungarianMatcher: the cost matrix has NaN/inf entries")
            slots, inst = (torch.as_tensor(x, dtype=torch.int64) for x in linear_sum_assignment(cost.numpy()))
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


def build_matcher(cfg) -> HungarianMatcher:
    """``HungarianMatcher`` from ``MODEL.MATCHER.{CLASS_COST,BBX_L1_COST,BBX_GIOU_COST}`` and
    ``MODEL.LOSS.FOCAL_ALPHA``."""
    m = cfg.MODEL.MATCHER
    return HungarianMatcher(
        cost_class=float(m.CLASS_COST),
        cost_bbox=float(m.BBX_L1_COST),
        cost_giou=float(m.BBX_GIOU_COST),
        focal_alpha=float(cfg.MODEL.LOSS.FOCAL_ALPHA),
    )


def build_clip_matcher(cfg) -> ClipHungarianMatcher:
    """``ClipHungarianMatcher`` from ``MODEL.DEVIS.NUM_FRAMES``, ``MODEL.MATCHER.*`` and
    ``MODEL.LOSS.FOCAL_ALPHA`` (``USE_SUM_L1_DISTANCE`` is optional: default False)."""
    m = cfg.MODEL.MATCHER
    return ClipHungarianMatcher(
        num_frames=int(cfg.MODEL.DEVIS.NUM_FRAMES),
        cost_class=float(m.CLASS_COST),
        cost_bbox=float(m.BBX_L1_COST),
        cost_giou=float(m.BBX_GIOU_COST),
        focal_alpha=float(cfg.MODEL.LOSS.FOCAL_ALPHA),
        use_l1_distance_sum=bool(m.get("USE_SUM_L1_DISTANCE", False)),
    )
