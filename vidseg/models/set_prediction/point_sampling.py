"""Point sampling of mask logits (PointRend; the point-sampled mask losses of Mask2Former and its VIS heirs).

Losses on ``P`` sampled points instead of every pixel cost ``P / (H*W)`` of the memory; most points are put
where the prediction is least certain (logits near 0), the rest are uniform, so that the loss still sees the
whole mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["point_sample", "uncertain_point_coords"]


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``x`` at normalised points.

    Args:
        x: ``[N, C, H, W]``.
        coords: ``[N, P, 2]`` ``(x, y)`` in ``[0, 1]`` (0 and 1 are the outer edges of the border pixels).
    Returns:
        ``[N, C, P]``; points outside the map read 0.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(x.dtype)  # [N, P, 1, 2] in grid_sample's [-1, 1]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(3)


def uncertain_point_coords(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Points biased towards uncertain logits.

    ``num_points * oversample_ratio`` uniform candidates are drawn; the ``importance_sample_ratio`` share of
    ``num_points`` with the smallest ``|logit|`` is kept, and the rest of the ``num_points`` are drawn
    uniformly.

    Args:
        logits: ``[N, 1, H, W]`` mask logits (class-agnostic).
    Returns:
        ``[N, num_points, 2]`` coordinates in ``[0, 1]``.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"uncertain_point_coords: oversample_ratio {oversample_ratio} must be >= 1 and "
            f"importance_sample_ratio {importance_sample_ratio} in [0, 1]"
        )
    n = logits.shape[0]
    kw = {"device": logits.device, "dtype": logits.dtype, "generator": generator}
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_sampled, 2, **kw)
    uncertainty = -point_sample(logits, candidates)[:, 0].abs()  # [N, num_sampled]
    num_uncertain = int(importance_sample_ratio * num_points)
    top = uncertainty.topk(num_uncertain, dim=1).indices  # [N, num_uncertain]
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    if num_points > num_uncertain:
        chosen = torch.cat([chosen, torch.rand(n, num_points - num_uncertain, 2, **kw)], dim=1)
    return chosen
