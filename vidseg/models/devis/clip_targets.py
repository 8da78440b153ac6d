"""DeVIS clip targets (devis.md §3.2): the data pipeline's :class:`ClipTargets` in the instance-major form
the clip matcher and the criterion read.

The pipeline has already recomputed every box from its augmented mask (``vidseg.data.clip_dataset``: tight
box of the mask, zero on invalid frames, instances without a valid frame dropped). Here:

- crowd instances are dropped (DeVIS trains without them);
- rows are instance-major, ``g * T + t``;
- an invalid frame takes the box of the temporally nearest valid frame (the earlier one on a tie) with
  width and height ``1e-6``, and keeps its empty mask; box and mask losses supervise it that way;
- every frame carries the instance's label.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vidseg.models.set_prediction.criterion import ClipTargetsAdapter
from vidseg.structures.clip_batch import ClipTargets

__all__ = ["INVALID_BOX_SIZE", "fill_invalid_boxes", "clip_targets", "ClipCriterion"]

INVALID_BOX_SIZE = 1e-6


def fill_invalid_boxes(boxes: Tensor, valid: Tensor) -> Tensor:
    """Boxes ``[N, T, 4]`` (cxcywh) with each invalid frame replaced by the nearest valid frame's centre and
    size ``1e-6``; an instance without any valid frame keeps its rows. Returns a new tensor."""
    out = boxes.clone()
    n, t = valid.shape
    if n == 0 or bool(valid.all()):
        return out
    frames = torch.arange(t, device=boxes.device)
    # Distance from every frame to every valid frame; invalid ones are pushed out of the argmin.
    dist = (frames[:, None] - frames[None, :]).abs()[None].expand(n, t, t).clone()
    dist[~valid[:, None, :].expand(n, t, t)] = t + 1
    nearest = dist.argmin(-1)  # [N, T]; argmin returns the first (earlier) frame on a tie
    filled = torch.gather(boxes, 1, nearest[..., None].expand(n, t, 4)).clone()
    filled[..., 2:] = INVALID_BOX_SIZE
    fill = ~valid & valid.any(1, keepdim=True)
    out[fill] = filled[fill]
    return out


def clip_targets(t: ClipTargets) -> dict[str, Tensor]:
    """The target dict of one clip.

    Args:
        t: ``labels [N]``, ``boxes [N, T, 4]`` normalised cxcywh, ``masks [N, T, H, W]``, ``valid [N, T]``,
            optional ``iscrowd [N]``.
    Returns:
        ``{"labels" [N*T] int64, "boxes" [N*T, 4], "valid" [N*T] bool, "masks" [N*T, H, W] bool}``, rows
        ``g * T + t`` (instance-major).
    """
    if t.boxes.dim() != 3 or t.boxes.shape[-1] != 4:
        raise ValueError(f"ClipTargets.boxes must be [N, T, 4], got {tuple(t.boxes.shape)}")
    keep = torch.ones(len(t), dtype=torch.bool, device=t.labels.device)
    if t.iscrowd is not None:
        keep &= ~t.iscrowd.bool().to(keep.device)
    valid = t.valid.bool()[keep]
    n, frames = valid.shape
    boxes = fill_invalid_boxes(t.boxes.float()[keep], valid)
    masks = t.masks[keep].bool() & valid[..., None, None]
    return {
        "labels": t.labels[keep].long()[:, None].expand(n, frames).reshape(-1),
        "boxes": boxes.reshape(n * frames, 4),
        "valid": valid.reshape(-1),
        "masks": masks.reshape(n * frames, *masks.shape[-2:]),
    }


class ClipCriterion(ClipTargetsAdapter):
    """The clip criterion called with ``ClipTargets``: one instance-major target dict per clip
    (:func:`clip_targets`)."""

    def __init__(self, criterion: nn.Module):
        super().__init__(criterion, lambda t: [clip_targets(t)])
