"""Triton kernels for multi-frame multi-scale deformable attention (forward and backward).

Layouts (all contiguous): value ``[B, F, S, M, D]``, locations ``[B, Q, M, L, P, 2]``, weights
``[B, Q, M, L, P]``, frame index ``[Q, P]`` int32 (optional), output ``[B, Q, M, D]``. One program owns a
block of ``BLOCK_Q`` queries of one (batch, head) and all ``D`` channels (``BLOCK_D`` = next power of two >=
D, the rest masked), so the reductions over channels for the location / weight gradients stay inside the
program. Loads are converted to fp32 and accumulated in fp32 whatever the input dtype (fp32, fp16, bf16). The
value gradient is scattered with fp32 atomics, or, in deterministic mode, gathered by
``msda_grad_value_gather_kernel`` from a sorted list of (value row, coefficient, grad row) triples.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _corner(value_ptr, row0, yy, xx, H, W, m, M, D, offs_d, dmask, qmask):
    """Load the ``[BLOCK_Q, BLOCK_D]`` values at integer pixel (yy, xx) (zeros outside); also the validity and
    the token row."""
    valid = qmask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    row = row0 + (yy * W + xx).to(tl.int64)
    ptrs = value_ptr + (row * M + m)[:, None] * D + offs_d[None, :]
    v = tl.load(ptrs, mask=valid[:, None] & dmask[None, :], other=0.0).to(tl.float32)
    return v, valid, row


@triton.jit
def _point(
    loc_ptr, attn_ptr, fidx_ptr, idx, offs_q, p, P, qmask, b, nF, S, s0, Hf, Wf,
    HAS_FRAMES: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """Sampling point ``idx`` of each query of the block: its weight, the token row of its frame's level
    start, the top-left integer pixel (x0, y0) and the bilinear fractions (lx, ly). Pixel centres sit at
    half-integers (``px = x * W - 0.5``), as ``grid_sample(align_corners=False)``."""
    x = tl.load(loc_ptr + 2 * idx, mask=qmask, other=0.0).to(tl.float32)
    y = tl.load(loc_ptr + 2 * idx + 1, mask=qmask, other=0.0).to(tl.float32)
    a = tl.load(attn_ptr + idx, mask=qmask, other=0.0).to(tl.float32)
    if HAS_FRAMES:
        f = tl.load(fidx_ptr + offs_q * P + p, mask=qmask, other=0)
    else:
        f = tl.zeros((BLOCK_Q,), dtype=tl.int32)
    row0 = ((b * nF + f) * S + s0).to(tl.int64)
    px = x * Wf - 0.5
    py = y * Hf - 0.5
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    return a, row0, x0f.to(tl.int32), y0f.to(tl.int32), px - x0f, py - y0f


@triton.jit
def msda_fwd_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    fidx_ptr,
    out_ptr,
    Q,
    nF,
    S,
    M,
    D,
    L,
    P,
    HAS_FRAMES: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_q = tl.program_id(0)
    pid_bm = tl.program_id(1)
    b = pid_bm // M
    m = pid_bm % M
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    qmask = offs_q < Q
    dmask = offs_d < D
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    # index of (b, q, m, l=0, p=0) in the [B, Q, M, L, P] layout
    base_qm = ((b * Q + offs_q) * M + m).to(tl.int64) * (L * P)
    for lvl in range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        s0 = tl.load(starts_ptr + lvl)
        Hf = H.to(tl.float32)
        Wf = W.to(tl.float32)
        for p in range(P):
            idx = base_qm + lvl * P + p
            a, row0, x0, y0, lx, ly = _point(
                loc_ptr, attn_ptr, fidx_ptr, idx, offs_q, p, P, qmask, b, nF, S, s0, Hf, Wf,
                HAS_FRAMES, BLOCK_Q,
            )  # fmt: skip
            v, _, _ = _corner(value_ptr, row0, y0, x0, H, W, m, M, D, offs_d, dmask, qmask)
            acc += ((1 - ly) * (1 - lx) * a)[:, None] * v
            v, _, _ = _corner(value_ptr, row0, y0, x0 + 1, H, W, m, M, D, offs_d, dmask, qmask)
            acc += ((1 - ly) * lx * a)[:, None] * v
            v, _, _ = _corner(value_ptr, row0, y0 + 1, x0, H, W, m, M, D, offs_d, dmask, qmask)
            acc += (ly * (1 - lx) * a)[:, None] * v
            v, _, _ = _corner(value_ptr, row0, y0 + 1, x0 + 1, H, W, m, M, D, offs_d, dmask, qmask)
            acc += (ly * lx * a)[:, None] * v
    out_ptrs = out_ptr + ((b * Q + offs_q) * M + m).to(tl.int64)[:, None] * D + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=qmask[:, None] & dmask[None, :])


@triton.jit
def msda_bwd_kernel(
    grad_out_ptr,
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    fidx_ptr,
    grad_value_ptr,
    grad_loc_ptr,
    grad_attn_ptr,
    Q,
    nF,
    S,
    M,
    D,
    L,
    P,
    HAS_FRAMES: tl.constexpr,
    ATOMIC_VALUE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_q = tl.program_id(0)
    pid_bm = tl.program_id(1)
    b = pid_bm // M
    m = pid_bm % M
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    qmask = offs_q < Q
    dmask = offs_d < D
    qd_mask = qmask[:, None] & dmask[None, :]
    g_ptrs = grad_out_ptr + ((b * Q + offs_q) * M + m).to(tl.int64)[:, None] * D + offs_d[None, :]
    g = tl.load(g_ptrs, mask=qd_mask, other=0.0).to(tl.float32)
    base_qm = ((b * Q + offs_q) * M + m).to(tl.int64) * (L * P)
    for lvl in range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        s0 = tl.load(starts_ptr + lvl)
        Hf = H.to(tl.float32)
        Wf = W.to(tl.float32)
        for p in range(P):
            idx = base_qm + lvl * P + p
            a, row0, x0, y0, lx, ly = _point(
                loc_ptr, attn_ptr, fidx_ptr, idx, offs_q, p, P, qmask, b, nF, S, s0, Hf, Wf,
                HAS_FRAMES, BLOCK_Q,
            )  # fmt: skip
            hx = 1 - lx
            hy = 1 - ly
            grad_a = tl.zeros((BLOCK_Q,), dtype=tl.float32)
            gpx = tl.zeros((BLOCK_Q,), dtype=tl.float32)
            gpy = tl.zeros((BLOCK_Q,), dtype=tl.float32)
            # corner (y0, x0): w = hy*hx, dw/dpx = -hy, dw/dpy = -hx
            v, valid, row = _corner(value_ptr, row0, y0, x0, H, W, m, M, D, offs_d, dmask, qmask)
            dot = tl.sum(g * v, axis=1)
            grad_a += hy * hx * dot
            gpx -= hy * dot
            gpy -= hx * dot
            if ATOMIC_VALUE:
                gv_ptrs = grad_value_ptr + (row * M + m)[:, None] * D + offs_d[None, :]
                tl.atomic_add(gv_ptrs, (a * hy * hx)[:, None] * g, mask=valid[:, None] & dmask[None, :])
            # corner (y0, x0 + 1): w = hy*lx
            v, valid, row = _corner(value_ptr, row0, y0, x0 + 1, H, W, m, M, D, offs_d, dmask, qmask)
            dot = tl.sum(g * v, axis=1)
            grad_a += hy * lx * dot
            gpx += hy * dot
            gpy -= lx * dot
            if ATOMIC_VALUE:
                gv_ptrs = grad_value_ptr + (row * M + m)[:, None] * D + offs_d[None, :]
                tl.atomic_add(gv_ptrs, (a * hy * lx)[:, None] * g, mask=valid[:, None] & dmask[None, :])
            # corner (y0 + 1, x0): w = ly*hx
            v, valid, row = _corner(value_ptr, row0, y0 + 1, x0, H, W, m, M, D, offs_d, dmask, qmask)
            dot = tl.sum(g * v, axis=1)
            grad_a += ly * hx * dot
            gpx -= ly * dot
            gpy += hx * dot
            if ATOMIC_VALUE:
                gv_ptrs = grad_value_ptr + (row * M + m)[:, None] * D + offs_d[None, :]
                tl.atomic_add(gv_ptrs, (a * ly * hx)[:, None] * g, mask=valid[:, None] & dmask[None, :])
            # corner (y0 + 1, x0 + 1): w = ly*lx
            v, valid, row = _corner(value_ptr, row0, y0 + 1, x0 + 1, H, W, m, M, D, offs_d, dmask, qmask)
            dot = tl.sum(g * v, axis=1)
            grad_a += ly * lx * dot
            gpx += ly * dot
            gpy += lx * dot
            if ATOMIC_VALUE:
                gv_ptrs = grad_value_ptr + (row * M + m)[:, None] * D + offs_d[None, :]
                tl.atomic_add(gv_ptrs, (a * ly * lx)[:, None] * g, mask=valid[:, None] & dmask[None, :])
            # d loc_x = d px * W (px = x * W - 0.5)
            tl.store(grad_attn_ptr + idx, grad_a.to(grad_attn_ptr.dtype.element_ty), mask=qmask)
            tl.store(grad_loc_ptr + 2 * idx, (gpx * a * Wf).to(grad_loc_ptr.dtype.element_ty), mask=qmask)
            tl.store(grad_loc_ptr + 2 * idx + 1, (gpy * a * Hf).to(grad_loc_ptr.dtype.element_ty), mask=qmask)


@triton.jit
def msda_grad_value_gather_kernel(
    seg_ptr,
    coef_ptr,
    grow_ptr,
    grad_out_ptr,
    grad_value_ptr,
    D,
    BLOCK_D: tl.constexpr,
):
    """Deterministic value gradient: value row ``r`` sums ``coef[i] * grad_out[grow[i]]`` over its segment
    ``seg[r] .. seg[r+1]`` of the sorted contribution list, in a fixed order and without atomics."""
    r = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    start = tl.load(seg_ptr + r)
    end = tl.load(seg_ptr + r + 1)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(start, end):
        c = tl.load(coef_ptr + i)
        gr = tl.load(grow_ptr + i)
        acc += c * tl.load(grad_out_ptr + gr * D + offs_d, mask=dmask, other=0.0).to(tl.float32)
    tl.store(grad_value_ptr + r.to(tl.int64) * D + offs_d, acc, mask=dmask)
