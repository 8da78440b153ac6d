"""The per-level formulation of the official fallback, kept as an independent baseline for tests and
benchmarks.

``ms_deform_attn_per_level`` makes one ``grid_sample`` call per level (the shape of Deformable-DETR's
``ms_deform_attn_core_pytorch``); ``temporal_ms_deform_attn_per_frame`` is the DeVIS formulation: a Python
loop over the frames of the clip, with the other frames' values copied and stacked as extra pseudo-levels.
They are straightforward and slow on purpose; the library path is :func:`vidseg.ops.msda_torch.msda_torch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn_per_level(
    value: Tensor, spatial_shapes: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """value ``[B, S, M, D]``, locations ``[B, Q, M, L, P, 2]``, weights ``[B, Q, M, L, P]`` -> ``[B, Q,
    M*D]``."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    per_level = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(B * M, D, int(h), int(w))
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [B*M, Q, P, 2]
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    a = attention_weights.transpose(1, 2).reshape(B * M, 1, Q, L * P)
    out = (torch.stack(samples, dim=-2).flatten(-2) * a).sum(-1).view(B, M * D, Q)
    return out.transpose(1, 2).contiguous()


def temporal_ms_deform_attn_per_frame(
    value: Tensor,
    spatial_shapes: Tensor,
    cur_locations: Tensor,
    cur_weights: Tensor,
    tmp_locations: Tensor,
    tmp_weights: Tensor,
    frames: Tensor,
) -> Tensor:
    """DeVIS temporal MSDA as the official code computes it: per frame, one call for the current frame and one
    for the other frames stacked as ``W * L`` pseudo-levels (frame-major).

    Args:
        value: ``[T, S, M, D]``.
        cur_locations / cur_weights: ``[T, Q, M, L, Kc, 2]`` / ``[T, Q, M, L, Kc]``.
        tmp_locations / tmp_weights: ``[T, Q, M, W, L, Kt, 2]`` / ``[T, Q, M, W, L, Kt]``.
        frames: ``[T, W]`` long, the frames sampled by the temporal points of each frame.

    Returns:
        ``[T, Q, M*D]``.
    """
    T = value.shape[0]
    W = frames.shape[1]
    tmp_shapes = spatial_shapes.repeat(W, 1)
    outs = []
    for t in range(T):
        cur = ms_deform_attn_per_level(
            value[t : t + 1], spatial_shapes, cur_locations[t : t + 1], cur_weights[t : t + 1]
        )
        others = value[frames[t]].flatten(0, 1)[None]  # copy of W frames' values
        tmp = ms_deform_attn_per_level(
            others, tmp_shapes, tmp_locations[t : t + 1].flatten(3, 4), tmp_weights[t : t + 1].flatten(3, 4)
        )
        outs.append(cur + tmp)
    return torch.cat(outs, dim=0)
