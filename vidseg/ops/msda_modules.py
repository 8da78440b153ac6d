"""Deformable attention modules: ``MSDeformAttn`` (Deformable DETR / Mask2Former pixel decoder) and the DeVIS
temporal encoder / decoder modules (devis.md §2.4).

Parameter names and shapes follow the official state dicts so checkpoints load one-to-one:
``sampling_offsets`` ``(M*L*Kc*2, C)`` laid out ``(M, L, Kc, 2)``; ``attention_weights`` ``(M*L*Kc, C)``;
``temporal_sampling_offsets`` ``(M*W*L*Kt*2, C)`` laid out ``(M, W, L, Kt, 2)``;
``temporal_attention_weights`` ``(M*W*L*Kt, C)``; ``value_proj`` / ``output_proj`` ``(C, C)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.ops.dispatch import check_impl
from vidseg.ops.msda import ms_deform_attn
from vidseg.ops.msda_temporal import temporal_frame_table, temporal_ms_deform_attn


def _ray_directions(n_heads: int) -> Tensor:
    """``[M, 2]``: head ``h`` looks along angle ``2*pi*h/M``, scaled so the larger of |x|, |y| is 1."""
    thetas = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    return grid / grid.abs().max(-1, keepdim=True)[0]


def _ray_bias(n_heads: int, lead: tuple[int, ...], n_points: int) -> Tensor:
    """Offset bias ``[M, *lead, K, 2]``: the head's ray, scaled by ``k + 1`` for point ``k`` (Deformable
    DETR)."""
    dirs = _ray_directions(n_heads).view(n_heads, *([1] * len(lead)), 1, 2)
    scale = torch.arange(1, n_points + 1, dtype=torch.float32).view(*([1] * (len(lead) + 1)), n_points, 1)
    return (dirs * scale).expand(n_heads, *lead, n_points, 2).contiguous()


def _check_dims(d_model: int, n_heads: int) -> None:
    if d_model % n_heads != 0:
        raise ValueError(f"d_model must be divisible by n_heads, got {d_model} and {n_heads}")


def _mask_value(value: Tensor, padding_mask: Tensor | None) -> Tensor:
    if padding_mask is None:
        return value
    if padding_mask.shape != value.shape[:2]:
        raise ValueError(
            f"input_padding_mask must be {tuple(value.shape[:2])} (bool, True = padding), "
            f"got {tuple(padding_mask.shape)}"
        )
    return value.masked_fill(padding_mask[..., None], 0.0)


def _loc_dtype(t: Tensor) -> torch.dtype:
    """Sampling locations are formed in at least fp32: in bf16 a location is off by up to 1/256 of the map
    (more than a pixel on the large levels), e.g. when the offsets come from a Linear under autocast."""
    return torch.promote_types(t.dtype, torch.float32)


def _offset_normalizer(spatial_shapes: Tensor, dtype: torch.dtype) -> Tensor:
    """``[L, 2]`` = ``(W_l, H_l)``: pixel offsets of level ``l`` -> normalised offsets."""
    return torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(dtype)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention of Deformable DETR.

    forward: query ``[B, Q, C]``, reference_points ``[B, Q, L, 2]`` (points in ``[0, 1]``; offsets are pixels
    of each level) or ``[B, Q, L, 4]`` (cxcywh boxes; offsets scaled by ``wh / n_points * 0.5``),
    input_flatten ``[B, S, C]``, input_spatial_shapes ``[L, 2]`` long, input_level_start_index ``[L]`` long,
    input_padding_mask ``[B, S]`` bool (True = padding) or None -> ``[B, Q, C]``.
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, impl: str = "auto"
    ):
        super().__init__()
        _check_dims(d_model, n_heads)
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.impl = check_impl(impl)
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(
                _ray_bias(self.n_heads, (self.n_levels,), self.n_points).view(-1)
            )
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.constant_(lin.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        B, Q, _ = query.shape
        S = input_flatten.shape[1]
        M, L, K = self.n_heads, self.n_levels, self.n_points
        if input_spatial_shapes.shape[0] != L:
            raise ValueError(
                f"MSDeformAttn has n_levels={L} but input_spatial_shapes is {input_spatial_shapes.shape}"
            )
        value = _mask_value(self.value_proj(input_flatten), input_padding_mask).view(
            B, S, M, self.d_model // M
        )
        offsets = self.sampling_offsets(query).view(B, Q, M, L, K, 2)
        offsets = offsets.to(_loc_dtype(offsets))
        weights = F.softmax(self.attention_weights(query).view(B, Q, M, L * K), -1).view(B, Q, M, L, K)
        if reference_points.shape[-1] == 2:
            norm = _offset_normalizer(input_spatial_shapes, offsets.dtype)
            loc = reference_points[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            ref = reference_points[:, :, None, :, None]
            loc = ref[..., :2] + offsets / K * ref[..., 2:] * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {tuple(reference_points.shape)}")
        out = ms_deform_attn(
            value, input_spatial_shapes, input_level_start_index, loc, weights, impl=self.impl
        )
        return self.output_proj(out)


class _TemporalMSDeformAttnBase(nn.Module):
    """Projections, initialisation and the joint softmax shared by the DeVIS temporal modules."""

    def __init__(
        self,
        d_model: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        n_temporal_points: int,
        num_frames: int,
        n_temporal_frames: int,
        impl: str,
    ):
        super().__init__()
        _check_dims(d_model, n_heads)
        self.d_model, self.n_levels, self.n_heads = d_model, n_levels, n_heads
        self.n_points, self.n_temporal_points = n_points, n_temporal_points
        self.num_frames, self.n_temporal_frames = num_frames, n_temporal_frames
        self.impl = check_impl(impl)
        M, L, Kc, Kt, W = n_heads, n_levels, n_points, n_temporal_points, n_temporal_frames
        self.sampling_offsets = nn.Linear(d_model, M * L * Kc * 2)
        self.attention_weights = nn.Linear(d_model, M * L * Kc)
        self.temporal_sampling_offsets = nn.Linear(d_model, M * W * L * Kt * 2)
        self.temporal_attention_weights = nn.Linear(d_model, M * W * L * Kt)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        M, L, Kc, Kt, W = (
            self.n_heads,
            self.n_levels,
            self.n_points,
            self.n_temporal_points,
            self.n_temporal_frames,
        )
        for lin in (self.sampling_offsets, self.temporal_sampling_offsets):
            nn.init.constant_(lin.weight, 0.0)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(_ray_bias(M, (L,), Kc).view(-1))
            # The same ray for every other frame and level: the bias does not depend on (W, L).
            self.temporal_sampling_offsets.bias.copy_(_ray_bias(M, (W, L), Kt).view(-1))
        for lin in (self.attention_weights, self.temporal_attention_weights):
            nn.init.constant_(lin.weight, 0.0)
            nn.init.constant_(lin.bias, 0.0)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.constant_(lin.bias, 0.0)

    def _project(self, query: Tensor, input_flatten: Tensor, padding_mask: Tensor | None):
        """value ``[T,S,M,D]``, offsets ``[T,Q,M,L,Kc,2]`` / ``[T,Q,M,W,L,Kt,2]``, weights (one softmax per
        head) ``[T,Q,M,L,Kc]`` / ``[T,Q,M,W,L,Kt]``."""
        T, Q, _ = query.shape
        M, L, Kc, Kt, W = (
            self.n_heads,
            self.n_levels,
            self.n_points,
            self.n_temporal_points,
            self.n_temporal_frames,
        )
        value = _mask_value(self.value_proj(input_flatten), padding_mask)
        value = value.view(T, input_flatten.shape[1], M, self.d_model // M)
        off = self.sampling_offsets(query).view(T, Q, M, L, Kc, 2)
        off = off.to(_loc_dtype(off))
        toff = self.temporal_sampling_offsets(query).view(T, Q, M, W, L, Kt, 2)
        toff = toff.to(_loc_dtype(toff))
        logits = torch.cat(
            (
                self.attention_weights(query).view(T, Q, M, L * Kc),
                self.temporal_attention_weights(query).view(T, Q, M, W * L * Kt),
            ),
            dim=-1,
        )
        a = F.softmax(logits, -1)
        return (
            value,
            off,
            toff,
            a[..., : L * Kc].view(T, Q, M, L, Kc),
            a[..., L * Kc :].view(T, Q, M, W, L, Kt),
        )

    def _check_inputs(self, query: Tensor, input_flatten: Tensor, spatial_shapes: Tensor) -> None:
        if query.dim() != 3 or input_flatten.dim() != 3 or query.shape[0] != input_flatten.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: query [T, Q, C] and input_flatten [T, S, C] must share T, got "
                f"{tuple(query.shape)} and {tuple(input_flatten.shape)}"
            )
        if spatial_shapes.shape[0] != self.n_levels:
            raise ValueError(
                f"{type(self).__name__} has n_levels={self.n_levels} but input_spatial_shapes is "
                f"{tuple(spatial_shapes.shape)}"
            )

    def _frames(self, T: int, window: int | None, device: torch.device) -> Tensor:
        frames = temporal_frame_table(T, window, device=device)
        if frames.shape[1] != self.n_temporal_frames:
            raise ValueError(
                f"{type(self).__name__} was built for {self.n_temporal_frames} other frames "
                f"(num_frames={self.num_frames}) but a clip of T={T} frames gives {frames.shape[1]}"
            )
        return frames

    def _attend(
        self,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        cur: Tensor,
        a_cur: Tensor,
        tmp: Tensor,
        a_tmp: Tensor,
        frames: Tensor,
    ) -> Tensor:
        """One temporal MSDA call for the whole clip, then the output projection."""
        out = temporal_ms_deform_attn(
            value, spatial_shapes, level_start_index, cur, a_cur, tmp, a_tmp, frames, impl=self.impl
        )
        return self.output_proj(out)


class TemporalMSDeformAttnEncoder(_TemporalMSDeformAttnBase):
    """DeVIS encoder self-attention over a clip.

    forward: query ``[T, S, C]``, reference_points ``[T, S, L, 2]``, input_flatten ``[T, S, C]``,
    input_spatial_shapes ``[L, 2]``, input_level_start_index ``[L]``, input_padding_mask ``[T, S]`` or None ->
    ``[T, S, C]``. Temporal points sample around the level-0 reference point at every level (official).
    ``connect_all_frames``: sample all ``T - 1`` other frames (then ``T`` must equal ``num_frames``);
    otherwise a window of ``temporal_window`` frames, reflected at the clip borders.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        n_temporal_points: int = 4,
        num_frames: int = 6,
        connect_all_frames: bool = True,
        temporal_window: int = 4,
        impl: str = "auto",
    ):
        self.connect_all_frames = connect_all_frames
        self.temporal_window = temporal_window
        if connect_all_frames:
            W = num_frames - 1
        else:
            W = len([d for d in range((-temporal_window) // 2, temporal_window // 2 + 1) if d != 0])
        super().__init__(d_model, n_levels, n_heads, n_points, n_temporal_points, num_frames, W, impl)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(query, input_flatten, input_spatial_shapes)
        if reference_points.shape[-1] != 2:
            raise ValueError(
                f"encoder reference_points must be [T, S, L, 2], got {tuple(reference_points.shape)}"
            )
        T = query.shape[0]
        frames = self._frames(T, None if self.connect_all_frames else self.temporal_window, query.device)
        value, off, toff, a_cur, a_tmp = self._project(query, input_flatten, input_padding_mask)
        norm = _offset_normalizer(input_spatial_shapes, off.dtype)
        cur = reference_points[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        tmp = reference_points[:, :, 0][:, :, None, None, None, None, :] + toff / norm[:, None, :]
        return self._attend(
            value, input_spatial_shapes, input_level_start_index, cur, a_cur, tmp, a_tmp, frames
        )


class TemporalMSDeformAttnDecoder(_TemporalMSDeformAttnBase):
    """DeVIS decoder cross-attention with instance-aware temporal sampling.

    forward: query ``[T, Nq, C]`` (slot ``i`` of every frame is one trajectory), reference_points
    ``[T, Nq, L, 2]`` or ``[T, Nq, L, 4]`` (cxcywh), input_flatten ``[T, S, C]``, input_spatial_shapes
    ``[L, 2]``, input_level_start_index ``[L]``, input_padding_mask ``[T, S]`` or None -> ``[T, Nq, C]``.
    ``instance_aware``: temporal points in frame ``u`` sample around the reference of the same slot in frame
    ``u`` (boxes: offsets scaled by that box's size / ``n_temporal_points``); otherwise around the own
    reference.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        n_temporal_points: int = 4,
        num_frames: int = 6,
        instance_aware: bool = True,
        impl: str = "auto",
    ):
        self.instance_aware = instance_aware
        super().__init__(
            d_model, n_levels, n_heads, n_points, n_temporal_points, num_frames, num_frames - 1, impl
        )

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(query, input_flatten, input_spatial_shapes)
        T, Nq, _ = query.shape
        if reference_points.dim() != 4 or reference_points.shape[:2] != (T, Nq):
            raise ValueError(
                f"decoder reference_points must be [T={T}, Nq={Nq}, L, 2|4], "
                f"got {tuple(reference_points.shape)}"
            )
        frames = self._frames(T, None, query.device)
        value, off, toff, a_cur, a_tmp = self._project(query, input_flatten, input_padding_mask)
        ref = reference_points
        # Reference of the temporal points: [T, Nq, W, L, d] (same slot in the other frame, or the own one).
        if self.instance_aware:
            tref = ref[frames].permute(0, 2, 1, 3, 4)
        else:
            tref = ref[:, :, None].expand(T, Nq, frames.shape[1], *ref.shape[2:])
        if ref.shape[-1] == 2:
            norm = _offset_normalizer(input_spatial_shapes, off.dtype)
            cur = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
            tmp = tref[:, :, None, :, :, None, :] + toff / norm[:, None, :]
        elif ref.shape[-1] == 4:
            r = ref[:, :, None, :, None]
            cur = r[..., :2] + off / self.n_points * r[..., 2:] * 0.5
            tr = tref[:, :, None, :, :, None]
            tmp = tr[..., :2] + toff / self.n_temporal_points * tr[..., 2:] * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {tuple(reference_points.shape)}")
        return self._attend(
            value, input_spatial_shapes, input_level_start_index, cur, a_cur, tmp, a_tmp, frames
        )
