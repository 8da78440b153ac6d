"""DeVIS temporal MSDA for a whole clip in one call (devis.md §2.4).

A query of frame ``t`` samples its own frame with ``Kc`` points per level and each of ``W`` other frames
``frames[t, j]`` with ``Kt`` points per level; its attention weights were normalised by ONE softmax over all
``L*Kc + W*L*Kt`` logits of the head. Here the current and temporal points of a level are concatenated into
one point axis ``P = Kc + W*Kt`` with a per-point frame index, and the whole clip goes through the multi-frame
core at once (no loop over frames).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidseg.ops.msda import multi_frame_ms_deform_attn


def temporal_frame_table(num_frames: int, window: int | None = None, device=None) -> Tensor:
    """The other frames that each frame of a clip samples, ``[T, W]`` long.

    ``window=None``: all other frames in ascending order (``W = T - 1``; DeVIS decoder, and encoder with
    ENC_CONNECT_ALL_FRAMES). Otherwise the offsets ``{-window//2 .. window//2} \\ {0}`` (Python floor
    division, as the official code), where an offset leaving the clip is reflected (``-d``).
    """
    T = int(num_frames)
    if T < 2:
        raise ValueError(
            f"temporal_frame_table: a clip needs at least 2 frames for temporal attention, got {T}"
        )
    if window is None:
        rows = [[u for u in range(T) if u != t] for t in range(T)]
    else:
        offsets = [d for d in range((-int(window)) // 2, int(window) // 2 + 1) if d != 0]
        rows = []
        for t in range(T):
            row = []
            for d in offsets:
                u = t + d if 0 <= t + d < T else t - d
                if not 0 <= u < T:
                    raise ValueError(
                        f"temporal_frame_table: window {window} does not fit a clip of {T} frames "
                        f"(frame {t}, offset {d})"
                    )
                row.append(u)
            rows.append(row)
    return torch.tensor(rows, dtype=torch.long, device=device)


def temporal_ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    cur_locations: Tensor,
    cur_weights: Tensor,
    tmp_locations: Tensor,
    tmp_weights: Tensor,
    frames: Tensor,
    impl: str = "auto",
    deterministic: bool | None = None,
) -> Tensor:
    """Temporal MSDA of a clip.

    Args:
        value: ``[T, S, M, D]`` per-head values of the clip's frames.
        spatial_shapes: ``[L, 2]`` long; level_start_index: ``[L]`` long (one frame's layout).
        cur_locations / cur_weights: ``[T, Q, M, L, Kc, 2]`` / ``[T, Q, M, L, Kc]``, points in the own frame.
        tmp_locations / tmp_weights: ``[T, Q, M, W, L, Kt, 2]`` / ``[T, Q, M, W, L, Kt]``, points in the other
            frames (the official offset layout ``(M, W, L, Kt)``).
        frames: ``[T, W]`` long, see :func:`temporal_frame_table`.

    Returns:
        ``[T, Q, M * D]``.
    """
    T, Q, M, L, Kc, _ = cur_locations.shape
    if tmp_locations.dim() != 7 or tmp_locations.shape[:3] != (T, Q, M) or tmp_locations.shape[4] != L:
        raise ValueError(
            f"temporal_ms_deform_attn: tmp_locations must be [T={T}, Q={Q}, M={M}, W, L={L}, Kt, 2], "
            f"got {tuple(tmp_locations.shape)}"
        )
    W, Kt = tmp_locations.shape[3], tmp_locations.shape[5]
    if frames.shape != (T, W):
        raise ValueError(f"temporal_ms_deform_attn: frames must be [T={T}, W={W}], got {tuple(frames.shape)}")
    if cur_weights.shape != cur_locations.shape[:-1] or tmp_weights.shape != tmp_locations.shape[:-1]:
        raise ValueError("temporal_ms_deform_attn: weights must match the locations without their last dim")
    P = Kc + W * Kt
    loc = torch.cat((cur_locations, tmp_locations.transpose(3, 4).reshape(T, Q, M, L, W * Kt, 2)), dim=4)
    attn = torch.cat((cur_weights, tmp_weights.transpose(3, 4).reshape(T, Q, M, L, W * Kt)), dim=4)
    own = torch.arange(T, device=frames.device)[:, None].expand(T, Kc)
    fidx = torch.cat((own, frames.repeat_interleave(Kt, dim=1)), dim=1)  # [T, P]
    fidx = fidx[:, None].expand(T, Q, P).reshape(T * Q, P)
    out = multi_frame_ms_deform_attn(
        value[None],
        spatial_shapes,
        level_start_index,
        loc.view(1, T * Q, M, L, P, 2),
        attn.view(1, T * Q, M, L, P),
        fidx,
        impl=impl,
        deterministic=deterministic,
    )
    return out.view(T, Q, M * value.shape[-1])
