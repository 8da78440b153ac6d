"""Functional multi-scale deformable attention (MSDA): the spatial op and the multi-frame core, with dispatch.

Coordinate convention (all implementations): a sampling location ``(x, y)`` is normalised to ``[0, 1]`` over
the level's feature map, ``(0, 0)`` the top-left corner of the top-left pixel; the sampled pixel position is
``(x * W_l - 0.5, y * H_l - 0.5)`` (``grid_sample`` with ``align_corners=False``) and taps outside the map
read zero. The output of head ``m`` is ``sum_{l,p} A[q,m,l,p] * bilinear(V[frame, level l, head m],
loc[q,m,l,p])``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidseg.ops.dispatch import resolve_impl
from vidseg.ops.msda_torch import msda_torch


def _check(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    frame_index: Tensor | None,
    name: str,
) -> None:
    if value.dim() != 5:
        raise ValueError(f"{name}: value must be [B, F, S, M, D] (or [B, S, M, D]), got {tuple(value.shape)}")
    B, nF, S, M, D = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"{name}: spatial_shapes must be [L, 2], got {tuple(spatial_shapes.shape)}")
    L = spatial_shapes.shape[0]
    if level_start_index.shape != (L,):
        raise ValueError(f"{name}: level_start_index must be [L={L}], got {tuple(level_start_index.shape)}")
    if spatial_shapes.dtype.is_floating_point or level_start_index.dtype.is_floating_point:
        raise TypeError(f"{name}: spatial_shapes and level_start_index must be integer tensors")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"{name}: sampling_locations must be [B, Q, M, L, P, 2], got {tuple(sampling_locations.shape)}"
        )
    Bl, Q, Ml, Ll, P, _ = sampling_locations.shape
    if (Bl, Ml, Ll) != (B, M, L):
        raise ValueError(
            f"{name}: sampling_locations {tuple(sampling_locations.shape)} does not match value "
            f"{tuple(value.shape)} (B, M) and spatial_shapes (L={L})"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"{name}: attention_weights must be {tuple(sampling_locations.shape[:-1])}, "
            f"got {tuple(attention_weights.shape)}"
        )
    if not torch.compiler.is_compiling() and not _is_fake(spatial_shapes):
        total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        if total != S:
            raise ValueError(f"{name}: value has S={S} tokens per frame but spatial_shapes sum to {total}")
    if frame_index is not None and frame_index.shape != (Q, P):
        raise ValueError(f"{name}: frame_index must be [Q={Q}, P={P}], got {tuple(frame_index.shape)}")


def _is_fake(t: Tensor) -> bool:
    return type(t).__name__ in ("FakeTensor", "FunctionalTensor") or t.device.type == "meta"


def multi_frame_ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    frame_index: Tensor | None = None,
    impl: str = "auto",
    deterministic: bool | None = None,
) -> Tensor:
    """MSDA where every sampling point may read a different frame of a clip.

    Args:
        value: ``[B, F, S, M, D]``.
        spatial_shapes: ``[L, 2]`` long ``(H_l, W_l)``; level_start_index: ``[L]`` long.
        sampling_locations: ``[B, Q, M, L, P, 2]`` in ``[0, 1]``; attention_weights: ``[B, Q, M, L, P]``.
        frame_index: ``[Q, P]`` long, frame read by point ``p`` of query ``q`` (all levels and heads);
            ``None`` when ``F == 1``.
        impl: ``"auto" | "torch" | "triton"``.
        deterministic: Triton backward without float atomics; ``None`` follows
            ``torch.are_deterministic_algorithms_enabled()``. The PyTorch path ignores it.

    Returns:
        ``[B, Q, M * D]`` in the dtype of ``value``.
    """
    _check(
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        frame_index,
        "ms_deform_attn",
    )
    which = resolve_impl(impl, value.device, value.dtype)
    if which == "torch":
        return msda_torch(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, frame_index
        )
    from vidseg.ops.msda_triton_op import msda_forward  # lazy: imports triton

    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    return msda_forward(
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        frame_index,
        deterministic,
    )


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    impl: str = "auto",
    deterministic: bool | None = None,
) -> Tensor:
    """Spatial MSDA (Deformable DETR): value ``[B, S, M, D]``, spatial_shapes ``[L, 2]`` long,
    level_start_index ``[L]`` long, sampling_locations ``[B, Q, M, L, P, 2]`` in ``[0, 1]``, attention_weights
    ``[B, Q, M, L, P]`` -> ``[B, Q, M * D]``. See the module docstring for the coordinate convention.
    """
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be [B, S, M, D], got {tuple(value.shape)}")
    return multi_frame_ms_deform_attn(
        value.unsqueeze(1),
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        None,
        impl=impl,
        deterministic=deterministic,
    )
