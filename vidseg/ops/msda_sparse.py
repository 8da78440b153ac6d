"""MSDA on CPU as a sparse matrix product: the pure-PyTorch path whose backward avoids ``grid_sample``.

Every bilinear sample reads 4 pixels ("taps"). For a chunk of queries the op is ``out = A @ V`` with

- ``V`` ``[C, D]``: every level, head and frame of the value laid out channels-last in one zero-padded
  "canvas" (see :class:`TapLayout`);
- ``A`` ``[B*M*c, C]``: a CSR matrix with exactly ``4*L*P`` entries per row (one row per batch element,
  head and query, ordered ``(b, m, q)``), value ``attention weight x bilinear weight`` at the tap's pixel.

Forward is one MKL sparse-dense product per chunk. The backward needs no sampling kernel either:

- grad of ``V`` = ``A^T @ G``: a COO product whose entries are the same taps, scattered by pixel;
- grad of the tap values = ``<G[row], V[col]>`` at every tap: ``torch.sparse.sampled_addmm`` (SDDMM);
  the attention-weight and location gradients are small closed forms in these 4 dot products per sample.

Why: ATen's CPU ``grid_sampler_2d_backward`` is the bulk of a training step of the grid_sample formulation
and its forward must be recomputed (or ~2.8 GB of samples kept) for the weight gradients; here the
backward costs about one scatter and one SDDMM of the taps, and nothing sample-sized (``[..., P, D]``) is
ever materialised. Exact padding without masks: the canvas has zero columns and rows around every frame,
and locations are clamped into them (a sample entirely outside its frame reads only zero taps, value 0 and
gradient 0, exactly as ``grid_sample`` with zero padding), so every tap index is valid.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Taps per chunk (sets the chunk's query count): bounds the index / weight temporaries (~40 B per tap).
_CHUNK_TAPS = 1 << 22
# Rows of zeros above the first frame: the taps of a sample clamped to (-1.5, -1.5) reach back 2 rows + 2.
_TOP = 3
# Order of the value-gradient scatter's entries: "level" = (b, m, l, p, q, corner), "query" = the CSR order.
_COO_ORDER = "level"


def sparse_path_supported(value: Tensor, spatial_shapes_list: list[tuple[int, int]], n_frames: int) -> bool:
    """Whether :func:`msda_sparse` can run: CPU, fp32/fp64, int32-addressable canvas, not being traced."""
    if value.device.type != "cpu" or value.dtype not in (torch.float32, torch.float64):
        return False
    if torch.compiler.is_compiling():
        return False  # sparse tensors do not trace; the grid_sample path does
    B, M = value.shape[0], value.shape[3]
    total = B * M * sum((_TOP + n_frames * (h + 2)) * (w + 2) for h, w in spatial_shapes_list)
    return total < 2**31 - 1


class TapLayout:
    """Where every (level, batch x head, frame, pixel) of the value lives in the canvas ``V [C, D]``.

    Level ``l`` occupies rows ``offs[l] : offs[l] + N * n_l`` of ``V`` (``N = B*M``, head-major); one
    head's block is ``_TOP`` zero rows of width ``W+2``, then per frame ``H`` pixel rows of ``W`` values + 2
    zeros and 2 zero rows. A tap at pixel ``(y, x)`` of frame ``f`` (``-2 <= y <= H+1``,
    ``-2 <= x <= W+1``) is canvas row ``offs[l] + n*n_l + (_TOP + f*(H+2) + y) * (W+2) + x``; ``x = -1, -2``
    wrap onto the previous row's zero columns.
    """

    def __init__(self, shapes: list[tuple[int, int]], n_frames: int, n: int) -> None:
        self.shapes, self.n_frames, self.n = shapes, n_frames, n
        self.sizes = [(_TOP + n_frames * (h + 2)) * (w + 2) for h, w in shapes]
        self.offs = [0]
        for s in self.sizes[:-1]:
            self.offs.append(self.offs[-1] + n * s)
        self.total = self.offs[-1] + n * self.sizes[-1]

    def level_view(self, buf: Tensor, lvl: int, B: int, M: int) -> Tensor:
        """The pixels of level ``lvl`` in ``buf [C, D]``, as a ``[B, M, F, H, W, D]`` view."""
        H, W = self.shapes[lvl]
        n = self.sizes[lvl]
        blk = buf[self.offs[lvl] : self.offs[lvl] + self.n * n].view(B, M, n, -1)[:, :, _TOP * (W + 2) :]
        return blk.reshape(B, M, self.n_frames, H + 2, W + 2, -1)[:, :, :, :H, :W]

    def canvas(self, value: Tensor, starts: list[int]) -> Tensor:
        """value ``[B, F, S, M, D]`` -> ``V [C, D]`` (one copy of the value, zeros around every frame)."""
        B, nF, _, M, D = value.shape
        buf = value.new_zeros(self.total, D)
        for lvl, ((H, W), s0) in enumerate(zip(self.shapes, starts)):
            src = value[:, :, s0 : s0 + H * W].view(B, nF, H, W, M, D).permute(0, 4, 1, 2, 3, 5)
            self.level_view(buf, lvl, B, M).copy_(src)
        return buf

    def value_grad(self, g_canvas: Tensor, starts: list[int], shape: torch.Size) -> Tensor:
        """Inverse of :meth:`canvas` for gradients: ``[C, D]`` -> ``[B, F, S, M, D]`` (padding dropped)."""
        B, nF, S, M, D = shape
        out = g_canvas.new_empty(shape)
        for lvl, ((H, W), s0) in enumerate(zip(self.shapes, starts)):
            dst = out[:, :, s0 : s0 + H * W].view(B, nF, H, W, M, D)
            dst.copy_(self.level_view(g_canvas, lvl, B, M).permute(0, 2, 3, 4, 1, 5))
        return out

    def taps(self, loc: Tensor, fidx: Tensor | None) -> tuple[Tensor, Tensor]:
        """Tap indices and fractional positions of a chunk of queries.

        Args:
            loc: ``[B, c, M, L, P, 2]`` locations ``(x, y)`` in ``[0, 1]``.
            fidx: ``[c, P]`` long frame per point, or ``None`` (one frame).

        Returns:
            col ``[B, M, c, 2(y0|y1), 2(x0|x1), L, P]`` int32 canvas rows of the taps; frac
            ``[B, M, c, 2, L, P]`` the bilinear fractions ``(fx, fy)``. The corner axes sit outside
            ``(L, P)`` so that every elementwise op runs over contiguous runs of ``L*P`` values.
        """
        B, c, M, L, P, _ = loc.shape
        dt, dev = loc.dtype, loc.device
        wh = torch.tensor(self.shapes, dtype=dt, device=dev).flip(1).t().reshape(2, L, 1)  # (W, H)
        # pixel position clamped to [-1.5, size + 0.5]: beyond that both taps of an axis are zero padding
        frac = torch.empty(B, M, c, 2, L, P, dtype=dt, device=dev)
        torch.addcmul(torch.tensor(-0.5, dtype=dt), loc.permute(0, 2, 1, 5, 3, 4), wh, out=frac)
        frac.clamp_(min=torch.full_like(wh, -1.5), max=wh + 0.5)
        x0y0 = frac.floor().nan_to_num_(nan=-2.0)  # NaN: valid (padding) taps; the NaN weight stays in frac
        frac.sub_(x0y0)
        w2 = torch.tensor([w + 2 for _, w in self.shapes], dtype=torch.int32, device=dev).view(L, 1)
        # y0 * (W+2) + x0 is a small integer: exact in the float dtype
        i00 = torch.addcmul(x0y0[:, :, :, 0], x0y0[:, :, :, 1], w2.to(dt)).to(torch.int32)  # [B,M,c,L,P]
        del x0y0
        # constant part: level block + head block + top padding (+ frame block)
        heads = torch.arange(B * M, dtype=torch.int32, device=dev).view(B, M, 1, 1, 1)
        size = torch.tensor(self.sizes, dtype=torch.int32, device=dev).view(L, 1)
        offs = torch.tensor(self.offs, dtype=torch.int32, device=dev).view(L, 1)
        i00 += heads * size + offs + _TOP * w2
        if fidx is not None:
            hp = torch.tensor([h + 2 for h, _ in self.shapes], dtype=torch.int32, device=dev).view(L, 1)
            i00 += fidx.to(torch.int32)[:, None, :] * (hp * w2)  # [c, L, P]
        corner = torch.stack((torch.zeros_like(w2), torch.ones_like(w2), w2, w2 + 1)).view(2, 2, L, 1)
        col = torch.add(i00[:, :, :, None, None], corner)
        return col, frac


def _tap_weights(frac: Tensor, a: Tensor) -> Tensor:
    """``a * wy * wx`` per tap: frac ``[B, M, c, 2, L, P]`` ``(fx, fy)``, a ``[B, M, c, L, P]`` ->
    ``[B, M, c, 2(y), 2(x), L, P]``."""
    fx, fy = frac.unbind(3)
    ay = torch.empty_like(frac)
    torch.mul(a, fy, out=ay[:, :, :, 1])
    torch.sub(a, ay[:, :, :, 1], out=ay[:, :, :, 0])
    wx = torch.empty_like(frac)
    wx[:, :, :, 1] = fx
    torch.sub(1, fx, out=wx[:, :, :, 0])
    return torch.mul(ay[:, :, :, :, None], wx[:, :, :, None, :])


def _csr(col: Tensor, vals: Tensor, rows: int, cols: int) -> Tensor:
    k = col[0, 0, 0].numel()  # taps per row (4 * L * P)
    crow = torch.arange(0, rows * k + 1, k, dtype=torch.int32, device=col.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")  # "beta" / invariant-check notices
        return torch.sparse_csr_tensor(crow, col.reshape(-1), vals.reshape(-1), (rows, cols))


def _scatter_taps(col: Tensor, vals: Tensor, g: Tensor, out: Tensor) -> None:
    """``out += A^T @ g``, ``A`` the taps of a chunk: col / vals ``[B, M, c, 2, 2, L, P]``, g ``[B*M*c, D]``.

    A COO matrix with indices ``(canvas row, query row)``, marked coalesced: the CPU kernel then adds every
    entry in one pass in the given order (duplicates simply add), with no sort. The entries are ordered
    ``(b, m, l, p, q, corner)``: consecutive taps then hit one head's level of one frame (a few hundred KiB
    of the canvas, cache-resident) instead of jumping between levels and frames (~25% faster)."""
    B, M, c = col.shape[:3]
    rows = torch.arange(B * M * c, dtype=torch.int32, device=col.device).view(B, M, c, 1, 1, 1, 1)
    if _COO_ORDER == "level":
        perm = (0, 1, 5, 6, 2, 3, 4)
        idx = torch.empty((2, B, M) + col.shape[5:] + col.shape[2:5], dtype=torch.long, device=col.device)
        idx[0] = col.permute(perm)
        idx[1] = rows.expand(col.shape).permute(perm)
        v = vals.permute(perm).reshape(-1)
    else:
        idx = torch.empty((2,) + col.shape, dtype=torch.long, device=col.device)
        idx[0] = col
        idx[1] = rows
        v = vals.reshape(-1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        at = torch.sparse_coo_tensor(idx.view(2, -1), v, (out.shape[0], g.shape[0]), is_coalesced=True)
    out.addmm_(at, g)  # in place: no canvas-sized temporary per chunk


class _SparseMSDA(torch.autograd.Function):
    """value ``[B, F, S, M, D]``, loc ``[B, Q, M, L, P, 2]``, attn ``[B, Q, M, L, P]`` -> ``[B, Q, M, D]``."""

    @staticmethod
    def forward(ctx, value, loc, attn, fidx, shapes, starts, chunk):
        # autocast would run the sparse products in bf16, which the MKL kernels do not take; the caller has
        # already chosen one compute dtype
        with torch.autocast("cpu", enabled=False):
            out = _SparseMSDA._forward(value, loc, attn, fidx, shapes, starts, chunk)
        ctx.save_for_backward(value, loc, attn, fidx)
        ctx.meta = (shapes, starts, chunk)
        return out

    @staticmethod
    def _forward(value, loc, attn, fidx, shapes, starts, chunk):
        B, nF, _, M, D = value.shape
        Q = loc.shape[1]
        lay = TapLayout(shapes, nF, B * M)
        V = lay.canvas(value, starts)
        out = value.new_empty(B, Q, M, D)
        for q0 in range(0, Q, chunk):
            sl = slice(q0, q0 + chunk)
            col, frac = lay.taps(loc[:, sl], None if fidx is None else fidx[sl])
            c = col.shape[2]
            vals = _tap_weights(frac, attn[:, sl].permute(0, 2, 1, 3, 4))
            o = _csr(col, vals, B * M * c, lay.total) @ V  # [B*M*c, D]
            out[:, sl] = o.view(B, M, c, D).transpose(1, 2)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        value, loc, attn, fidx = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            return _SparseMSDA._backward(
                value, loc, attn, fidx, *ctx.meta, *ctx.needs_input_grad[:3], grad_out.to(value.dtype)
            )

    @staticmethod
    def _backward(value, loc, attn, fidx, shapes, starts, chunk, need_v, need_loc, need_a, grad_out):
        B, nF, _, M, D = value.shape
        Q, L = loc.shape[1], loc.shape[3]
        lay = TapLayout(shapes, nF, B * M)
        V = lay.canvas(value, starts)
        g_canvas = torch.zeros_like(V) if need_v else None
        g_loc = torch.empty_like(loc) if need_loc else None
        g_attn = torch.empty_like(attn) if need_a else None
        wh = torch.tensor(shapes, dtype=loc.dtype).flip(1).t().reshape(2, L, 1)  # d pixel / d location
        for q0 in range(0, Q, chunk):
            sl = slice(q0, q0 + chunk)
            col, frac = lay.taps(loc[:, sl], None if fidx is None else fidx[sl])
            c = col.shape[2]
            a = attn[:, sl].permute(0, 2, 1, 3, 4)
            vals = _tap_weights(frac, a)
            g = grad_out[:, sl].transpose(1, 2).reshape(B * M * c, D)
            if need_loc or need_a:
                A = _csr(col, vals, B * M * c, lay.total)
                # dv[tap] = <g[row], V[col]>: the gradient of the output w.r.t. the tap's weight a*wy*wx
                dv = torch.sparse.sampled_addmm(A, g, V.t(), beta=0.0).values().view(col.shape)
                del A
                _location_and_weight_grads(dv, frac, a, wh, g_loc, g_attn, sl)
                del dv
            if need_v:
                _scatter_taps(col, vals, g, g_canvas)
        g_value = lay.value_grad(g_canvas, starts, value.shape) if need_v else None
        return g_value, g_loc, g_attn, None, None, None, None


def _location_and_weight_grads(dv, frac, a, wh, g_loc, g_attn, sl) -> None:
    """Bilinear chain rule from the 4 tap gradients ``dv [B, M, c, 2(y), 2(x), L, P]``.

    With ``w = a * wy * wx``: ``d/da = sum wy wx dv``; ``d/dfx = a * sum_i wy_i (dv_i1 - dv_i0)``;
    ``d/dfy = a * sum_j wx_j (dv_1j - dv_0j)``; a pixel coordinate is ``loc * size - 0.5`` (the clamp needs
    no mask: a clamped sample has only zero taps, so its dv are 0)."""
    fx, fy = frac.unbind(3)
    ex = dv[:, :, :, :, 1] - dv[:, :, :, :, 0]  # [B, M, c, 2(y), L, P]: x-differences per row
    ey = dv[:, :, :, 1] - dv[:, :, :, 0]  # [B, M, c, 2(x), L, P]: y-differences per column
    gxy = torch.empty_like(frac)
    torch.addcmul(ex[:, :, :, 0], fy, ex[:, :, :, 1] - ex[:, :, :, 0], out=gxy[:, :, :, 0])
    if g_attn is not None:
        r0 = torch.addcmul(dv[:, :, :, 0, 0], fy, ey[:, :, :, 0])  # sum_i wy_i dv_i0
        g_attn[:, sl] = torch.addcmul(r0, fx, gxy[:, :, :, 0]).permute(0, 2, 1, 3, 4)
    if g_loc is not None:
        torch.addcmul(ey[:, :, :, 0], fx, ey[:, :, :, 1] - ey[:, :, :, 0], out=gxy[:, :, :, 1])
        gxy.mul_(a[:, :, :, None]).mul_(wh)
        g_loc[:, sl] = gxy.permute(0, 2, 1, 4, 5, 3)


def msda_sparse(
    value: Tensor,
    shapes: list[tuple[int, int]],
    starts: list[int],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    frame_index: Tensor | None,
) -> Tensor:
    """The sparse-matrix CPU path: same arguments as :func:`vidseg.ops.msda_torch.msda_torch` (shapes and
    level starts as Python lists; one dtype for all floating inputs) -> ``[B, Q, M * D]``."""
    B, nF, _, M, D = value.shape
    Q, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    chunk = max(1, _CHUNK_TAPS // (B * M * 4 * L * P))
    fidx = None if frame_index is None or nF == 1 else frame_index
    if fidx is not None and fidx.numel() and not 0 <= int(fidx.min()) <= int(fidx.max()) < nF:
        # an index outside the clip would address another head's (or no) memory in the sparse kernels
        raise ValueError(
            f"ms_deform_attn: frame_index must lie in [0, {nF - 1}] (value has F={nF} frames), "
            f"got [{int(fidx.min())}, {int(fidx.max())}]"
        )
    out = _SparseMSDA.apply(value, sampling_locations, attention_weights, fidx, shapes, starts, chunk)
    return out.view(B, Q, M * D)
