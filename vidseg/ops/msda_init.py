"""Initialising DeVIS temporal projections from spatial (COCO) ones: devis.md §3.8, FINETUNE_TEMPORAL_MODULES.

The spatial ``sampling_offsets`` rows are laid out ``(M, Ls, Ks, 2)`` and ``attention_weights`` rows
``(M, Ls, Ks)``; the temporal rows are ``(M, W, L, Kt[, 2])``. The official conversion views the spatial
tensor as ``(M, 1, Ls, Ks[, 2], ...)``, repeats it over the ``W`` other frames and keeps ``[:, :, :L, :Kt]``,
so every other frame initially gets exactly the current frame's offsets and logits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def expand_spatial_to_temporal(
    tensor: Tensor,
    n_heads: int,
    n_levels: int,
    n_points: int,
    n_temporal_frames: int,
    n_temporal_points: int,
    n_temporal_levels: int | None = None,
) -> Tensor:
    """Map a spatial projection weight ``[M*Ls*Ks*c, C]`` or bias ``[M*Ls*Ks*c]`` (``c`` = 2 for offsets, 1
    for attention weights, inferred) to its temporal counterpart ``[M*W*L*Kt*c(, C)]``.

    ``n_temporal_levels`` (default ``n_levels``) may be smaller than ``n_levels`` (levels are sliced, as for
    the single-level ablations); ``n_temporal_points`` must not exceed ``n_points``.
    """
    L = n_levels if n_temporal_levels is None else n_temporal_levels
    M, Ls, Ks, W, Kt = n_heads, n_levels, n_points, n_temporal_frames, n_temporal_points
    if L > Ls or Kt > Ks:
        raise ValueError(f"cannot take {L} levels x {Kt} points from a spatial projection of {Ls} x {Ks}")
    rows = tensor.shape[0]
    c, rem = divmod(rows, M * Ls * Ks)
    if rem or c not in (1, 2):
        raise ValueError(
            f"spatial projection has {rows} rows, expected {M}*{Ls}*{Ks} (attention weights) or x2 (offsets)"
        )
    trail = tuple(tensor.shape[1:])
    t = tensor.reshape(M, 1, Ls, Ks, c, *trail).expand(M, W, Ls, Ks, c, *trail)
    return t[:, :, :L, :Kt].reshape(M * W * L * Kt * c, *trail).clone()


@torch.no_grad()
def init_temporal_from_spatial(module) -> None:
    """Copy a temporal MSDA module's own ``sampling_offsets`` / ``attention_weights`` into its ``temporal_*``
    projections (in place), for a module whose spatial projections were just loaded from a COCO checkpoint."""
    kw = dict(
        n_heads=module.n_heads,
        n_levels=module.n_levels,
        n_points=module.n_points,
        n_temporal_frames=module.n_temporal_frames,
        n_temporal_points=module.n_temporal_points,
    )
    for src, dst in (
        (module.sampling_offsets, module.temporal_sampling_offsets),
        (module.attention_weights, module.temporal_attention_weights),
    ):
        dst.weight.copy_(expand_spatial_to_temporal(src.weight, **kw))
        dst.bias.copy_(expand_spatial_to_temporal(src.bias, **kw))
