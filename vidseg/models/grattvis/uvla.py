"""GenVIS's unified video label assignment (UVLA, spec §4.4): which clip query learns which instance.

A query stays bound to the instance it first matched for the whole clip sequence; only instances that appear
for the first time are matched afresh. For each (layer copy, video) item ``n = l*B + b`` of one step:

1. **Cost** (GenVIS's matcher, fp32): ``num_points`` uniform random points, drawn once per item and shared by
   every prediction, every target and every frame of the clip (the per-frame values are concatenated,
   ``W * num_points`` per mask)::

       C[q, g] = w_class * (-softmax(logits_q)[label_g]) + w_mask * BCE_pts(q, g) + w_dice * Dice_pts(q, g)

2. **Constraints**: columns of targets that are not *new* cost 1e6 (in effect only new instances are
   matched); from the second step on, rows of queries bound to instances that are old *and visible now* cost
   1e6. Every target column is assigned (N <= cQ), and the result is sorted by target index.
3. **Merge**: the first step takes the fresh assignment; later steps take it for new targets and keep the
   previous query of every other target, visible or not.

The losses supervise only the targets valid in the step, so a query bound to an instance that is invisible
now trains as "no object". Quirk reproduced (spec §4.4): the row constraint covers old *visible* instances
only, so a new instance may be matched to a query still bound to an invisible old instance; if that instance
returns, both share the query.

The criterion runs one chain per output layer (final, and each aux layer), each with its own
:class:`AssignmentState`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vidseg.models.grattvis.targets import StepTargets
from vidseg.models.set_prediction.costs import dice_cost, sigmoid_ce_cost, softmax_class_cost
from vidseg.models.set_prediction.hungarian import assign
from vidseg.models.set_prediction.point_sampling import point_sample

__all__ = ["BLOCKED", "AssignmentState", "UnifiedVideoLabelAssignment"]

# The cost of a forbidden (query, target) pair, as in the official matcher.
BLOCKED = 1e6

# Per item: ``(query_idx [N], target_idx [N])`` int64 CPU tensors, ``target_idx == arange(N)``.
ItemIndices = tuple[torch.Tensor, torch.Tensor]


@dataclass
class AssignmentState:
    """Where one assignment chain stands after a step.

    Attributes:
        indices: ``L*B`` pairs ``(query_idx [N_b], target_idx [N_b])``, item ``n = l*B + b``, sorted by
            target; ``query_idx[g]`` is the query bound to instance g of video b.
        step: how many steps the chain has seen.
    """

    indices: list[ItemIndices]
    step: int

    def bound_query(self, item: int, target: int) -> int:
        """The query bound to ``target`` in ``item``."""
        return int(self.indices[item][0][target])


class UnifiedVideoLabelAssignment(nn.Module):
    """GenVIS's matcher and its assignment chain (no parameters); see the module docstring.

    Args:
        cost_class / cost_mask / cost_dice: the cost weights (``MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT``,
            2 / 5 / 5).
        num_points: points per frame shared by all masks of an item (``MODEL.MASK_FORMER.TRAIN_NUM_POINTS``,
            12544).
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
            raise ValueError("UnifiedVideoLabelAssignment: all costs are 0 (MODEL.MASK_FORMER.*_WEIGHT)")
        if num_points < 1:
            raise ValueError(f"UnifiedVideoLabelAssignment: num_points {num_points} must be >= 1")
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
        """``[cQ, N]`` unconstrained cost of one item, in fp32.

        Args:
            logits: ``[cQ, K+1]``; pred_masks: ``[cQ, W, h, w]`` logits; labels: ``[N]``;
                tgt_masks: ``[N, W, H, W]`` (any size: both are read at the same normalised points).
        """
        coords = torch.rand(1, self.num_points, 2, device=pred_masks.device, generator=self.generator)
        pred = point_sample(pred_masks.float(), coords.expand(pred_masks.shape[0], -1, -1)).flatten(1)
        tgt = point_sample(tgt_masks.float(), coords.expand(tgt_masks.shape[0], -1, -1)).flatten(1)
        return (
            self.cost_class * softmax_class_cost(logits, labels)
            + self.cost_mask * sigmoid_ce_cost(pred, tgt)
            + self.cost_dice * dice_cost(pred, tgt)
        )

    @torch.no_grad()
    def match(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: Sequence[StepTargets],
        prev: AssignmentState | None = None,
    ) -> list[ItemIndices]:
        """The fresh, constrained assignment of one step (step 1 and 2 of the module docstring), no merge.

        Args:
            outputs: ``"pred_logits"`` ``[L, B, cQ, K+1]`` and ``"pred_masks"`` ``[L, B, cQ, W, h, w]``.
            targets: B :class:`StepTargets` of this step.
            prev: the chain's state after the previous step (None at the first step).
        Returns:
            ``L*B`` pairs ``(query_idx [N_b], target_idx [N_b])`` sorted by target (``target_idx ==
            arange(N_b)``).
        """
        for key in ("pred_logits", "pred_masks"):
            if key not in outputs:
                raise KeyError(
                    f"UnifiedVideoLabelAssignment: outputs has no {key!r} (keys: {sorted(outputs)})"
                )
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if logits.dim() != 4 or masks.dim() != 6:
            raise ValueError(
                "UnifiedVideoLabelAssignment: expected pred_logits [L, B, cQ, K+1] and pred_masks "
                f"[L, B, cQ, W, h, w], got {tuple(logits.shape)} and {tuple(masks.shape)}"
            )
        copies, videos, queries = logits.shape[:3]
        if len(targets) != videos:
            raise ValueError(f"UnifiedVideoLabelAssignment: {len(targets)} targets for {videos} videos")
        if prev is not None and len(prev.indices) != copies * videos:
            raise ValueError(
                f"UnifiedVideoLabelAssignment: the previous state has {len(prev.indices)} items, "
                f"this step has {copies * videos} (L={copies} x B={videos})"
            )
        empty = torch.empty(0, dtype=torch.int64)
        out: list[ItemIndices] = []
        for n in range(copies * videos):
            l, b = divmod(n, videos)
            t = targets[b]
            if len(t) == 0:
                out.append((empty, empty))
                continue
            if len(t) > queries:
                raise ValueError(
                    f"UnifiedVideoLabelAssignment: video {b} has {len(t)} instances for {queries} clip "
                    "queries; every instance needs its own query (raise MODEL.VITA.NUM_OBJECT_QUERIES)"
                )
            if t.masks.shape[1] != masks.shape[3]:
                raise ValueError(
                    f"UnifiedVideoLabelAssignment: targets of video {b} have {t.masks.shape[1]} frames, "
                    f"pred_masks has W={masks.shape[3]}"
                )
            device = masks.device
            cost = self.cost_matrix(logits[l, b], masks[l, b], t.labels.to(device), t.masks.to(device)).cpu()
            new, valid = t.new.cpu(), t.valid.cpu()
            cost[:, ~new] = BLOCKED
            if prev is not None:
                old_visible = valid & ~new
                cost[prev.indices[n][0][old_visible]] = BLOCKED
            rows, cols = assign(cost, "UnifiedVideoLabelAssignment")
            order = cols.argsort()
            out.append((rows[order], cols[order]))
        return out

    def assign(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: Sequence[StepTargets],
        prev: AssignmentState | None = None,
    ) -> tuple[list[ItemIndices], AssignmentState]:
        """Match one step and merge it into the chain (step 3 of the module docstring).

        Args:
            outputs, targets, prev: as for :meth:`match`.
        Returns:
            ``(indices, state)``: the merged ``L*B`` pairs ``(query_idx [N_b], target_idx [N_b])`` (all
            targets, sorted; the losses keep the pairs whose target is ``valid``) and the state to pass to the
            next step.
        """
        fresh = self.match(outputs, targets, prev)
        if prev is None:
            return fresh, AssignmentState(indices=fresh, step=1)
        videos = len(targets)
        merged: list[ItemIndices] = []
        for n, (new_q, new_t) in enumerate(fresh):
            new = targets[n % videos].new.cpu()
            query = prev.indices[n][0].clone()
            query[new] = new_q[new]
            merged.append((query, new_t))
        return merged, AssignmentState(indices=merged, step=prev.step + 1)
