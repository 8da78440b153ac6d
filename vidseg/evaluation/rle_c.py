"""pycocotools' C mask routines used by the metric: frame intersections of whole videos at once, and the
official per-frame ``merge`` values (see :mod:`vidseg.evaluation.video_iou` for how they are used)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def c_intersections(
    d_rles: list,
    g_rles: list,
    dkey: np.ndarray,
    gkey: np.ndarray,
    d_h: np.ndarray,
    g_h: np.ndarray,
    d_area: np.ndarray,
    max_width: int,
    dblock: np.ndarray | None = None,
    gblock: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel intersections of same-key frames with one call of pycocotools' C ``iou`` (a few for long
    videos).

    Args:
        d_rles, g_rles: checked compressed RLE dicts, D and G of them.
        dkey, gkey: int64 [D], [G] frame keys; only frames with equal keys are compared.
        d_h, g_h: int64 [D], [G] mask heights (the C code needs them to find the boxes).
        d_area: int64 [D], the prediction frames' areas (all > 0).
        max_width: the largest mask width of both sides.
        dblock, gblock: optional int64 [D], [G] video of each frame: one C call per video (frames of
            different videos have different keys anyway; this only avoids testing their boxes).

    Returns:
        ``(a, b, inter)``: int64 [K] indices into ``d_rles`` and ``g_rles``, and float64 [K] their
        intersections, for the pairs with a non-zero intersection.
    """
    from pycocotools import mask as mask_utils

    # The C code uses w only to compare sizes and (as a 32-bit uint) as the initial left edge of a box, so a
    # width of max_width + key keeps each key distinct and every box exact (below 2**32 for any real video).
    base = int(max_width)
    d_in = [
        {"size": [int(h), base + k], "counts": r["counts"]}
        for r, h, k in zip(d_rles, d_h.tolist(), dkey.tolist())
    ]
    g_in = [
        {"size": [int(h), base + k], "counts": r["counts"]}
        for r, h, k in zip(g_rles, g_h.tolist(), gkey.tolist())
    ]
    out_a, out_b, out_i = [], [], []
    for d_sel, g_sel in _block_chunks(dkey, gkey, dblock, gblock):
        # "Crowd" GT: rleIou returns i / area(d) for overlapping boxes (0 when i = 0, -1 for other sizes).
        o = mask_utils.iou(
            [d_in[j] for j in d_sel.tolist()], [g_in[j] for j in g_sel.tolist()], [1] * len(g_sel)
        )
        o = np.asarray(o, dtype=np.float64).reshape(len(d_sel), len(g_sel))
        a, b = np.nonzero(o > 0)
        out_a.append(d_sel[a])
        out_b.append(g_sel[b])
        # Exact: o = fl(i / A) with i <= A < 2**32, so |o * A - i| <= 2 * 2**-53 * i < 0.5 (one rounding in
        # the division, one in the product): rounding o * A gives back the integer i.
        out_i.append(np.rint(o[a, b] * d_area[d_sel[a]]))
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_i)


_MAX_CELLS = 1 << 22  # cells of one C iou matrix (32 MiB of float64): bounds memory for long videos


def _block_chunks(
    dkey: np.ndarray, gkey: np.ndarray, dblock: np.ndarray | None, gblock: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_key_chunks` within each block (video): ``[(d_indices, g_indices), ...]``."""
    if dblock is None or gblock is None or len(np.union1d(dblock, gblock)) <= 1:
        return _key_chunks(dkey, gkey)
    d_order = np.argsort(dblock, kind="stable")
    g_order = np.argsort(gblock, kind="stable")
    blocks = np.union1d(dblock, gblock)
    d_cut = np.searchsorted(dblock[d_order], blocks, side="left").tolist() + [len(dblock)]
    g_cut = np.searchsorted(gblock[g_order], blocks, side="left").tolist() + [len(gblock)]
    out = []
    for i in range(len(blocks)):
        d_idx = d_order[d_cut[i] : d_cut[i + 1]]
        g_idx = g_order[g_cut[i] : g_cut[i + 1]]
        if len(d_idx) and len(g_idx):
            out += [(d_idx[a], g_idx[b]) for a, b in _key_chunks(dkey[d_idx], gkey[g_idx])]
    return out


def _key_chunks(dkey: np.ndarray, gkey: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the frames into groups of whole keys whose D x G matrix stays under ``_MAX_CELLS`` (one group
    for a usual video): ``[(d_indices, g_indices), ...]``."""
    if len(dkey) * len(gkey) <= _MAX_CELLS:
        return [(np.arange(len(dkey)), np.arange(len(gkey)))]
    nk = int(max(dkey.max(), gkey.max())) + 1
    nd = np.bincount(dkey, minlength=nk)
    ng = np.bincount(gkey, minlength=nk)
    d_order = np.argsort(dkey, kind="stable")
    g_order = np.argsort(gkey, kind="stable")
    d_end, g_end = np.cumsum(nd), np.cumsum(ng)
    chunks, k0 = [], 0
    while k0 < nk:
        k1 = k0 + 1  # grow while the matrix of keys k0..k1-1 stays small (a single key always fits)
        while k1 < nk and (d_end[k1] - d_end[k0] + nd[k0]) * (g_end[k1] - g_end[k0] + ng[k0]) <= _MAX_CELLS:
            k1 += 1
        d_lo, g_lo = d_end[k0] - nd[k0], g_end[k0] - ng[k0]
        chunks.append((d_order[d_lo : d_end[k1 - 1]], g_order[g_lo : g_end[k1 - 1]]))
        k0 = k1
    return [(d, g) for d, g in chunks if len(d) and len(g)]


def official_frames(d_rles: list, g_rle: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Official per-frame ``area(merge([d, g], 1))`` and ``area(merge([d, g], 0))`` for each ``d`` (same
    size as ``g``), float64 [D] each."""
    from pycocotools import mask as mask_utils

    inter = [float(mask_utils.area(mask_utils.merge([d, g_rle], True))) for d in d_rles]
    union = [float(mask_utils.area(mask_utils.merge([d, g_rle], False))) for d in d_rles]
    return np.array(inter), np.array(union)
