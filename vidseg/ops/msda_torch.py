"""Pure-PyTorch multi-scale deformable attention: the reference implementation and the CPU path.

One core handles the spatial op (one frame per batch element) and the DeVIS temporal op (every sample reads
the frame given by a per-sample frame index). Per level it samples all frames, heads and queries with ONE
``grid_sample``: the frames of a level are stacked vertically into one tall "canvas" with a zero row between
frames, so a sample in frame ``f`` is a sample in the canvas shifted by ``f * (H + 1)`` rows. The zero row
gives exactly the zero padding of the frame border (bilinear taps at rows ``-1`` and ``H`` read zeros);
samples that lie entirely outside the frame (``y * H <= -0.5`` or ``>= H + 0.5``) are clamped onto the
separator and their weight is zeroed, so they never read a neighbouring frame. The value tensor is copied
once per level (into the canvas layout) instead of once per frame as in the per-frame formulation.

Memory: the samples ``[B*M, D, Q, P]`` of a level are the big tensor. ``_WeightedGridSample`` samples and
weighs the queries chunk by chunk; when a level needs more than one chunk its backward recomputes each chunk's
samples (one extra ``grid_sample`` forward) instead of saving them for the whole clip, as autograd would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Queries per chunk are chosen so that one chunk's samples hold at most this many elements (64 MiB fp32).
_CHUNK_ELEMS = 1 << 24


def msda_torch(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    frame_index: Tensor | None = None,
) -> Tensor:
    """Multi-frame multi-scale deformable attention in pure PyTorch (differentiable by autograd).

    Args:
        value: ``[B, F, S, M, D]`` per-head values of ``F`` frames, ``S = sum_l H_l * W_l`` tokens per frame.
        spatial_shapes: ``[L, 2]`` long, ``(H_l, W_l)`` per level.
        level_start_index: ``[L]`` long, offset of each level in ``S``.
        sampling_locations: ``[B, Q, M, L, P, 2]``, ``(x, y)`` in ``[0, 1]`` of the level (grid_sample
            ``align_corners=False``: pixel = ``x * W - 0.5``).
        attention_weights: ``[B, Q, M, L, P]`` (already normalised by the caller).
        frame_index: ``[Q, P]`` long, the frame (``0 .. F-1``) that point ``p`` of query ``q`` reads, the
            same at every level and head. ``None`` requires ``F == 1``.

    Returns:
        ``[B, Q, M * D]``.
    """
    B, nF, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    if frame_index is None and nF != 1:
        raise ValueError(f"msda_torch: frame_index is required when value has F={nF} frames")
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    chunk = max(1, _CHUNK_ELEMS // max(1, B * M * D * P))  # queries per chunk
    # One compute dtype for values, locations and weights (e.g. bf16 values with fp32 locations compute in
    # fp32); autocast is switched off inside so the forward and the hand-written backward agree on dtypes.
    out_dtype = value.dtype
    ct = torch.promote_types(
        torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype
    )
    value, sampling_locations, attention_weights = (
        value.to(ct),
        sampling_locations.to(ct),
        attention_weights.to(ct),
    )

    # [B, M, L, P, Q, ...]: (B, M) folds into the grid_sample batch, and with the queries innermost the
    # weighted sum over points and the reductions of the backward run over contiguous query rows (faster on
    # CPU than reducing a short trailing point axis).
    loc = sampling_locations.permute(0, 2, 3, 4, 1, 5)
    attn = attention_weights.permute(0, 2, 3, 4, 1)
    f = None if frame_index is None else frame_index.t().to(loc.dtype)[None, None]  # [1, 1, P, Q]
    out = None
    for lvl, ((H, W), s0) in enumerate(zip(shapes, starts)):
        v = value[:, :, s0 : s0 + H * W].reshape(B, nF, H, W, M, D).permute(0, 4, 5, 1, 2, 3)  # [B,M,D,F,H,W]
        x = loc[:, :, lvl, :, :, 0]  # [B, M, P, Q]
        y = loc[:, :, lvl, :, :, 1]
        a = attn[:, :, lvl]
        if nF == 1:
            canvas = v.reshape(B * M, D, H, W)
            gy = 2 * y - 1
        else:
            canvas = F.pad(v, (0, 0, 0, 1)).reshape(B * M, D, nF * (H + 1), W)
            yh = y * H  # = pixel row + 0.5
            inside = (yh > -0.5) & (yh < H + 0.5)
            a = a * inside.to(a.dtype)
            yh = yh.clamp(-0.5, H + 0.5)
            gy = 2 * (f * (H + 1) + yh) / (nF * (H + 1)) - 1
        grid = torch.stack((2 * x - 1, gy), dim=-1).reshape(B * M, P, Q, 2)
        o = _WeightedGridSample.apply(canvas, grid, a.reshape(B * M, P, Q), chunk)  # [B*M, D, Q]
        out = o if out is None else out + o
    return out.view(B, M, D, Q).permute(0, 3, 1, 2).reshape(B, Q, M * D).to(out_dtype)


def _sample(canvas: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sample_backward(g: Tensor, canvas: Tensor, grid: Tensor, need_canvas: bool, need_grid: bool):
    # aten's grid_sample backward (bilinear=0, zeros=0, align_corners=False), without building a graph
    return torch.ops.aten.grid_sampler_2d_backward(g, canvas, grid, 0, 0, False, [need_canvas, need_grid])


class _WeightedGridSample(torch.autograd.Function):
    """``out[n, :, q] = sum_p weights[n, p, q] * grid_sample(canvas, grid)[n, :, p, q]``, in query chunks.

    canvas ``[N, D, Hc, Wc]``, grid ``[N, P, Q, 2]``, weights ``[N, P, Q]`` -> ``[N, D, Q]``. When all queries
    fit in one chunk the samples are kept for the backward; otherwise the backward recomputes them per chunk.
    """

    @staticmethod
    def forward(ctx, canvas: Tensor, grid: Tensor, weights: Tensor, chunk: int) -> Tensor:
        with torch.autocast(canvas.device.type, enabled=False):
            return _WeightedGridSample._forward(ctx, canvas, grid, weights, chunk)

    @staticmethod
    def _forward(ctx, canvas: Tensor, grid: Tensor, weights: Tensor, chunk: int) -> Tensor:
        N, D = canvas.shape[:2]
        Q = grid.shape[2]
        ctx.chunk = chunk
        ctx.samples = None
        if Q <= chunk:
            s = _sample(canvas, grid)  # [N, D, P, Q]
            if any(ctx.needs_input_grad[:3]):
                ctx.samples = s
                out = (s * weights[:, None]).sum(2)
            else:
                out = s.mul_(weights[:, None]).sum(2)
        else:
            out = canvas.new_empty(N, D, Q)
            for q0 in range(0, Q, chunk):
                s = _sample(canvas, grid[:, :, q0 : q0 + chunk])  # [N, D, P, c]
                out[:, :, q0 : q0 + chunk] = s.mul_(weights[:, None, :, q0 : q0 + chunk]).sum(2)
        ctx.save_for_backward(canvas, grid, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        canvas, grid, weights = ctx.saved_tensors
        need_canvas, need_grid, need_weights = ctx.needs_input_grad[:3]
        chunk, saved = ctx.chunk, ctx.samples
        ctx.samples = None
        g_canvas = torch.zeros_like(canvas) if need_canvas else None
        g_grid = torch.empty_like(grid) if need_grid else None
        g_weights = torch.empty_like(weights) if need_weights else None
        Q = grid.shape[2]
        for q0 in range(0, Q, chunk):
            sl = slice(q0, q0 + chunk)
            g = grad_out[:, :, None, sl]  # [N, D, 1, c]
            gr = grid[:, :, sl]
            if need_weights:
                s = saved if saved is not None else _sample(canvas, gr)  # recomputed instead of saved
                g_weights[:, :, sl] = (s * g).sum(1)
                del s
            if need_canvas or need_grid:
                gc, gg = _sample_backward(g * weights[:, None, :, sl], canvas, gr, need_canvas, need_grid)
                if need_canvas:
                    g_canvas += gc
                if need_grid:
                    g_grid[:, :, sl] = gg
        return g_canvas, g_grid, g_weights, None
