"""DeVIS per-clip post-processing (devis.md §2.5): top-k (trajectory, class) pairs of one clip."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_topk"]


@torch.no_grad()
def clip_topk(
    pred_logits: Tensor, pred_boxes: Tensor, num_frames: int, k: int, num_valid_frames: int | None = None
) -> dict[str, Tensor]:
    """The top-k (slot, class) pairs of a clip by trajectory score.

    A trajectory is slot ``i`` in every frame (queries ``t * Nq + i``); its score for class c is the mean
    over the first ``num_valid_frames`` frames of ``sigmoid(logit[t, i, c])`` (the rest of a ping-pong padded
    clip does not count). A slot may appear with several classes.

    Args:
        pred_logits: ``[T*Nq, K]``; pred_boxes: ``[T*Nq, 4]`` normalised cxcywh (frame-major).
    Returns:
        ``"scores"`` ``[k]``, ``"labels"`` ``[k]`` int64 (0..K-1), ``"slots"`` ``[k]`` int64,
        ``"frame_scores"`` ``[T, k]`` (the class probability of the slot in each frame), ``"boxes"``
        ``[T, k, 4]`` normalised cxcywh.
    """
    t = num_frames
    q, num_classes = pred_logits.shape
    if q % t:
        raise ValueError(f"clip_topk: {q} queries not divisible by T={t}")
    nq = q // t
    n = t if num_valid_frames is None else max(1, min(int(num_valid_frames), t))
    prob = pred_logits.float().sigmoid().view(t, nq, num_classes)
    traj = prob[:n].mean(0).flatten()
    scores, flat = torch.topk(traj, min(k, traj.numel()))
    slots = torch.div(flat, num_classes, rounding_mode="floor")
    labels = flat % num_classes
    return {
        "scores": scores,
        "labels": labels,
        "slots": slots,
        "frame_scores": prob[:, slots, labels],
        "boxes": pred_boxes.float().view(t, nq, 4)[:, slots],
    }
