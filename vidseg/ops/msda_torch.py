"""Pure-PyTorch multi-scale deformable attention: the reference implementation and the CPU path.

On CPU with fp32/fp64 tensors :func:`msda_torch` hands the work to the sparse-matrix formulation in
``msda_sparse.py`` (faster forward and, above all, backward; see docs/ops.md). Everywhere else (CUDA with
``impl="torch"``, bf16/fp16, ``torch.compile`` tracing) it runs the ``grid_sample`` formulation below.

One core handles the spatial op (one frame per batch element) and the DeVIS temporal op (every sample reads
the frame given by a per-sample frame index). Per level it samples all frames, heads and queries with ONE
``grid_sample``: the frames of a level are stacked vertically into one tall "canvas" with two zero rows
after each frame, so a sample in frame ``f`` is a sample in the canvas shifted by ``f * (H + 2)`` rows. The
zero rows give exactly the zero padding of the frame border (bilinear taps at rows ``-1`` and ``H`` read
zeros), and a sample entirely outside its frame is clamped to pixel row ``-1.5`` or ``H + 0.5``, where both
taps are zero rows: it reads exactly 0 with zero gradient, as in the true op, and never touches a
neighbouring frame. The value tensor is copied once per level (into the canvas layout) instead of once per
frame as in the per-frame formulation.

Memory: the samples ``[B*M, D, P, Q]`` of a level are the big tensor. ``_WeightedGridSample`` samples and
weighs the queries chunk by chunk; when a level needs more than one chunk its backward recomputes each chunk's
samples (one extra ``grid_sample`` forward) instead of saving them for the whole clip, as autograd would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from vidseg.ops.msda_sparse import msda_sparse, sparse_path_supported

# Queries per chunk are chosen so that one chunk's samples hold at most this many elements (64 MiB fp32).
_CHUNK_ELEMS = 1 << 24
# When the sparse-matrix path (msda_sparse.py) runs on CPU: "always" (fp32/fp64 CPU tensors), "grad" (only
# when a backward will follow), "never" (the grid_sample formulation everywhere; benchmarks and tests).
SPARSE_CPU = "always"


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
    if _use_sparse(value, sampling_locations, attention_weights, shapes, nF):
        out = msda_sparse(value, shapes, starts, sampling_locations, attention_weights, frame_index)
        return out.to(out_dtype)

    # Grids for all levels at once (a few passes over the location tensor instead of many small per-level
    # ops), written straight into the layout [L, B*M, P, Q, 2]: (B, M) folds into the grid_sample batch, and
    # with the queries innermost the weighted sum over points and the backward's reductions run over
    # contiguous query rows. unbind (not indexing) lets autograd assemble the gradients in one pass as well.
    x, y = sampling_locations.permute(3, 0, 2, 4, 1, 5).unbind(-1)  # [L, B, M, P, Q]
    gx = 2 * x - 1
    if nF == 1:
        gy = 2 * y - 1
    else:
        hs = spatial_shapes[:, 0].to(ct).view(L, 1, 1, 1, 1)
        # yh = pixel row + 0.5, clamped to [-1, H + 1] (pixel rows -1.5 and H + 0.5: two zero taps)
        yh = torch.clamp(y * hs, min=torch.full_like(hs, -1.0), max=hs + 1)
        f = frame_index.t().to(ct)[None, None, None]  # [1, 1, 1, P, Q]
        gy = torch.addcmul(yh, f, hs + 2).mul(2 / (nF * (hs + 2))).sub(1)
    grids = torch.stack((gx, gy), dim=-1).view(L, B * M, P, Q, 2).unbind(0)
    weights = attention_weights.permute(3, 0, 2, 4, 1).reshape(L, B * M, P, Q).unbind(0)
    out = None
    for lvl, ((H, W), s0) in enumerate(zip(shapes, starts)):
        v = value[:, :, s0 : s0 + H * W].reshape(B, nF, H, W, M, D).permute(0, 4, 5, 1, 2, 3)  # [B,M,D,F,H,W]
        if nF == 1:
            canvas = v.reshape(B * M, D, H, W)
        else:
            canvas = F.pad(v, (0, 0, 0, 2)).reshape(B * M, D, nF * (H + 2), W)
        o = _WeightedGridSample.apply(canvas, grids[lvl], weights[lvl], chunk)  # [B*M, D, Q]
        out = o if out is None else out + o
    return out.view(B, M, D, Q).permute(0, 3, 1, 2).reshape(B, Q, M * D).to(out_dtype)


def _use_sparse(value: Tensor, loc: Tensor, attn: Tensor, shapes: list[tuple[int, int]], nF: int) -> bool:
    if SPARSE_CPU == "never" or not sparse_path_supported(value, shapes, nF):
        return False
    if SPARSE_CPU == "always":
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in (value, loc, attn))


def _sample(canvas: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sample_backward(g: Tensor, canvas: Tensor, grid: Tensor, need_canvas: bool, need_grid: bool):
    # aten's grid_sample backward (bilinear=0, zeros=0, align_corners=False), without building a graph
    return torch.ops.aten.grid_sampler_2d_backward(g, canvas, grid, 0, 0, False, [need_canvas, need_grid])


def _weighted_sum(s: Tensor, w: Tensor, inplace: bool) -> Tensor:
    """``sum_p s[:, :, p] * w[:, None, p]``: s ``[N, D, P, c]``, w ``[N, P, c]`` -> ``[N, D, c]``.

    ``inplace``: ``s`` is a temporary and may be overwritten (the fastest form on CPU); otherwise fused
    multiply-adds into one accumulator, without a sample-sized temporary."""
    if inplace:
        return s.mul_(w[:, None]).sum(2)
    out = s[:, :, 0] * w[:, None, 0]
    for p in range(1, s.shape[2]):
        out.addcmul_(s[:, :, p], w[:, None, p])
    return out


class _WeightedGridSample(torch.autograd.Function):
    """``out[n, :, q] = sum_p weights[n, p, q] * grid_sample(canvas, grid)[n, :, p, q]``, in query chunks.

    canvas ``[N, D, Hc, Wc]``, grid ``[N, P, Q, 2]``, weights ``[N, P, Q]`` -> ``[N, D, Q]``. When all queries
    fit in one chunk the samples are kept for the backward; otherwise the backward recomputes them per chunk.
    """

    @staticmethod
    def forward(ctx, canvas: Tensor, grid: Tensor, weights: Tensor, chunk: int) -> Tensor:
        with torch.autocast(canvas.device.type, enabled=False):
            N, D = canvas.shape[:2]
            Q = grid.shape[2]
            ctx.chunk = chunk
            ctx.samples = None
            if Q <= chunk:
                s = _sample(canvas, grid)  # [N, D, P, Q]
                keep = any(ctx.needs_input_grad[:3])
                if keep:
                    ctx.samples = s
                out = _weighted_sum(s, weights, inplace=not keep)
            else:
                out = canvas.new_empty(N, D, Q)
                for q0 in range(0, Q, chunk):
                    sl = slice(q0, q0 + chunk)
                    out[:, :, sl] = _weighted_sum(_sample(canvas, grid[:, :, sl]), weights[:, :, sl], True)
            ctx.save_for_backward(canvas, grid, weights)
            return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        canvas, grid, weights = ctx.saved_tensors
        need_canvas, need_grid, need_weights = ctx.needs_input_grad[:3]
        chunk, saved = ctx.chunk, ctx.samples
        ctx.samples = None
        Q = grid.shape[2]
        single = Q <= chunk
        g_canvas = None if single or not need_canvas else torch.zeros_like(canvas)
        g_grid = torch.empty_like(grid) if need_grid else None
        g_weights = torch.empty_like(weights) if need_weights else None
        for q0 in range(0, Q, chunk):
            sl = slice(q0, q0 + chunk)
            g = grad_out[:, :, sl]  # [N, D, c]
            gr = grid[:, :, sl]
            if need_weights:
                s = saved if saved is not None else _sample(canvas, gr)  # recomputed instead of saved
                buf = torch.empty_like(g)
                for p in range(s.shape[2]):
                    torch.mul(s[:, :, p], g, out=buf)
                    torch.sum(buf, dim=1, out=g_weights[:, p, sl])
                del s
            if need_canvas or need_grid:
                gs = g[:, :, None] * weights[:, None, :, sl]  # [N, D, P, c]
                gc, gg = _sample_backward(gs, canvas, gr, need_canvas, need_grid)
                del gs
                if need_canvas:
                    g_canvas = gc if single else g_canvas.add_(gc)
                if need_grid:
                    g_grid[:, :, sl] = gg
        return g_canvas, g_grid, g_weights, None
