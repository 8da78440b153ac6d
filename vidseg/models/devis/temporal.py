"""DeVIS temporal attention, composed into the shared Deformable DETR layers (devis.md §2.4, §2.7).

The encoder and decoder layers of :mod:`vidseg.models.deformable_detr.transformer` take their attention
module as an argument; these builders pick the module for one layer of each:

- encoder self-attention: :class:`vidseg.ops.TemporalMSDeformAttnEncoder` over the clip ``[T, S, C]``
  (all ``T - 1`` other frames, or a reflected window of them), or with ``K_temp = 0`` / temporal connections
  disabled the per-frame spatial :class:`vidseg.ops.MSDeformAttn` (the frames are its batch);
- decoder cross-attention: :class:`vidseg.ops.TemporalMSDeformAttnDecoder` on the frame-major queries
  ``[T, Nq, C]`` (instance-aware: slot ``i`` of frame ``u`` lends its reference box to slot ``i`` of every
  other frame), or the per-frame spatial module.

The transformer runs in ``clip_queries`` mode, so its decoder self-attention spans all ``T * Nq`` queries and
the cross-attention sees them per frame. Parameter names stay the official ones: ``sampling_offsets``,
``attention_weights``, ``temporal_sampling_offsets``, ``temporal_attention_weights``, ``value_proj`` and
``output_proj``.
"""

from __future__ import annotations

from torch import nn

from vidseg import ops

__all__ = ["encoder_attention", "decoder_attention"]


def encoder_attention(
    *,
    d_model: int,
    n_levels: int,
    n_heads: int,
    n_points: int,
    n_temporal_points: int,
    num_frames: int,
    connect_all_frames: bool = True,
    temporal_window: int = 4,
    temporal_connections: bool = True,
    impl: str = "auto",
) -> nn.Module:
    """The attention of one DeVIS encoder layer.

    ``n_temporal_points`` is K_temp per other frame and level; 0 (or ``temporal_connections`` False, the
    "w/o temporal connections" ablation) gives the spatial per-frame module: every frame attends to itself
    only, with the official ``MSDeformAttn`` parameter names.
    """
    if not temporal_connections or n_temporal_points == 0:
        return ops.MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=impl)
    return ops.TemporalMSDeformAttnEncoder(
        d_model,
        n_levels,
        n_heads,
        n_points,
        n_temporal_points,
        num_frames=num_frames,
        connect_all_frames=connect_all_frames,
        temporal_window=temporal_window,
        impl=impl,
    )


def decoder_attention(
    *,
    d_model: int,
    n_levels: int,
    n_heads: int,
    n_points: int,
    n_temporal_points: int,
    num_frames: int,
    instance_aware: bool = True,
    temporal_connections: bool = True,
    impl: str = "auto",
) -> nn.Module:
    """The cross-attention of one DeVIS decoder layer (queries ``[T, Nq, C]``, references
    ``[T, Nq, L, 2|4]``).

    ``instance_aware``: temporal points in frame ``u`` sample around slot ``i``'s reference in frame ``u``;
    otherwise around the query's own reference. ``n_temporal_points`` 0 or ``temporal_connections`` False: the
    spatial module, per frame.
    """
    if not temporal_connections or n_temporal_points == 0:
        return ops.MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=impl)
    return ops.TemporalMSDeformAttnDecoder(
        d_model,
        n_levels,
        n_heads,
        n_points,
        n_temporal_points,
        num_frames=num_frames,
        instance_aware=instance_aware,
        impl=impl,
    )
