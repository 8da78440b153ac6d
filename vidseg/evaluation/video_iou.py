"""Spatio-temporal mask IoU between predicted and ground-truth tracks of one video (or a few together).

Official definition (``YTVOSeval.computeIoU.iou_seq``) for a prediction d and a GT g, frames paired with
``zip`` (so only the first ``min(len(d), len(g))`` frames count)::

    I = sum_t area(merge([d_t, g_t], intersect=1))     over frames where both are present
    U = sum_t area(merge([d_t, g_t], intersect=0))     (a frame with only one present adds that one's area)
    IoU = I / U if U > 0 else 0

A frame where both are present but their sizes differ adds 0 to I and U (``rleMerge`` returns an empty mask).

The frame intersections of a whole video come from ONE call of pycocotools' C ``iou`` (``rleIou``): all
prediction frames against all GT frames, each RLE parsed once. Only frames of the same (frame index,
category, mask size) must meet, so each frame's ``size`` is given to the C code as ``[h, key]`` with a
key unique to that combination: ``rleIou`` skips pairs whose boxes do not overlap (C, no run walk) and pairs
of different sizes (-1), so the only pairs whose runs are walked are those the metric needs. With every GT
flagged "crowd", ``rleIou`` returns ``i / area(d)``, from which the integer intersection ``i`` is recovered
exactly (see :func:`vidseg.evaluation.rle_c.c_intersections`); the union follows as ``area(d) + area(g) - i``.

Counts of 0 inside an RLE (never written by pycocotools' encoder): the C walk over two RLEs (the same loop in
``rleMerge``, used by the official code, and ``rleIou``) stops early when both RLEs reach a count of 0 at the
same pixel, so the official intersection and union then only cover the pixels before that point. A GT frame
with such a count takes the official path itself (``area(merge(...))`` per pair, C); with none in the GT
frame, the walk cannot stop early and the fast path is exact.

Every RLE that reaches the C walk is checked first (its counts must fill exactly ``h * w`` pixels): the C loop
never ends for two RLEs of different totals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vidseg.evaluation.blob_frames import shared_blob
from vidseg.evaluation.rle_c import c_intersections, official_frames
from vidseg.evaluation.rle_runs import (
    RLEError,
    check_compressed,
    check_counts,
    decode_compressed_batch,
    polygons_to_compressed,
    readable_strings,
)


@dataclass
class VideoMasks:
    """The frames of N tracks of one video (T = the longest frame list).

    Attributes:
        length: int64 [N], each track's frame-list length.
        present: bool [N, T], frame given (a truthy entry; an empty mask is present with area 0).
        area: int64 [N, T], mask areas (0 where absent).
        height, width: int64 [N, T], mask sizes (0 where absent).
        rle_index: int64 [N, T], index into ``rles`` of the checked frames; -1 where absent or only the area
            is known.
        rles: checked frames as compressed RLE dicts ``{"size": [h, w], "counts": str | bytes}`` for the C
            code.
        zero_inside: bool [len(rles)], the RLE has a count of 0 before its last pixel (see the module doc).
    """

    length: np.ndarray
    present: np.ndarray
    area: np.ndarray
    height: np.ndarray
    width: np.ndarray
    rle_index: np.ndarray
    rles: list
    zero_inside: np.ndarray


_AREA_CHUNK = (
    255  # pycocotools' area() fails on lists longer than 255 with numpy 2 (a uint8 placeholder array)
)


def decode_tracks(
    tracks: Sequence[Sequence],
    on_error: Callable[[int, int, str], Exception],
    video_size: tuple[int | None, int | None] = (None, None),
    need_runs: np.ndarray | None = None,
    find_zero_counts: bool = True,
) -> VideoMasks:
    """Read and check the frames of several tracks of one video, each RLE decoded at most once.

    Args:
        tracks: N per-frame lists; an entry is None (absent), a compressed RLE dict (``counts`` str/bytes), an
            uncompressed RLE dict (``counts`` int array or list) or a polygon list (rasterised at
            ``video_size``).
        on_error: builds the exception for (track n, frame t, reason) of a malformed mask.
        video_size: ``(height, width)`` of the video, needed for polygons only.
        need_runs: optional bool [N, >=T]; compressed frames marked False never meet a GT frame: only their
            area is taken (pycocotools' C ``area``) after a check of their characters. Default: check all.
        find_zero_counts: fill ``zero_inside`` (needed for GT frames only; predictions leave it False).
    """
    lengths, present_t, sizes, segs = [], [], [], []
    for i, frames in enumerate(tracks):
        lengths.append(len(frames))
        ts, hw, given = [], [], []
        for t, seg in enumerate(frames):
            if seg is None:
                continue
            if isinstance(seg, list):  # polygon GT, rasterised like YTVOS.annToRLE
                h, w = video_size
                if h is None or w is None:
                    raise on_error(i, t, "a polygon mask needs the video's 'height' and 'width'")
                try:
                    seg = {"size": [h, w], "counts": polygons_to_compressed(seg, h, w)}
                except Exception as e:  # pycocotools raises assorted errors for bad polygons
                    raise on_error(i, t, f"cannot rasterise polygon ({e})") from None
            ts.append(t)
            hw.append((int(seg["size"][0]), int(seg["size"][1])))
            given.append(seg)
        present_t.append(np.array(ts, dtype=np.int64))
        sizes.append(np.array(hw, dtype=np.int64).reshape(-1, 2))
        segs.append(given)
    return decode_packed_tracks(lengths, present_t, sizes, segs, on_error, need_runs, find_zero_counts)


def decode_packed_tracks(
    lengths: Sequence[int],
    present_t: Sequence[np.ndarray],
    sizes: Sequence[np.ndarray],
    segs: Sequence[Sequence[Mapping]],
    on_error: Callable[[int, int, str], Exception],
    need_runs: np.ndarray | None = None,
    find_zero_counts: bool = True,
    known_areas: Sequence[np.ndarray | None] | None = None,
) -> VideoMasks:
    """:func:`decode_tracks` for tracks whose given frames are already indexed (no Python loop over frames
    for the usual inputs: all compressed strings, or all int64 count arrays).

    Args:
        lengths: N frame-list lengths.
        present_t: per track, int64 [F_n] indices of the given frames.
        sizes: per track, int64 [F_n, 2] their (height, width).
        segs: per track, the F_n RLE dicts (``counts`` str/bytes, int64 arrays or int lists), in ``present_t``
            order.
        on_error, need_runs, find_zero_counts: as :func:`decode_tracks`.
        known_areas: optional, per track int64 [F_n] areas of its given frames (pycocotools ``area``,
            measured while loading after the character check; -1 where not measured, as ``DTTrack.areas``);
            used for the frames that need no runs.
    """
    n = len(lengths)
    length = np.asarray(lengths, dtype=np.int64).reshape(n)
    shape = (n, int(length.max()) if n else 0)
    nf = np.fromiter((len(t) for t in present_t), dtype=np.int64, count=n)
    row = np.repeat(np.arange(n, dtype=np.int64), nf)
    col = np.concatenate(present_t) if n else np.zeros(0, np.int64)
    hw = np.concatenate(sizes).reshape(-1, 2) if n else np.zeros((0, 2), np.int64)
    blob = shared_blob(segs)  # predictions read by results_fork: strings taken from the buffer on demand
    if blob is None:
        flat = [x for track in segs for x in track]
        counts_all = [x["counts"] for x in flat]
        is_str = np.fromiter(
            (type(c) is str or type(c) is bytes for c in counts_all), dtype=bool, count=len(flat)
        )
    else:
        is_str = np.ones(len(row), dtype=bool)
    present = np.zeros(shape, dtype=bool)
    present[row, col] = True
    height = np.zeros(shape, dtype=np.int64)
    width = np.zeros(shape, dtype=np.int64)
    height[row, col] = hw[:, 0]
    width[row, col] = hw[:, 1]
    area = np.zeros(shape, dtype=np.int64)
    rle_index = np.full(shape, -1, dtype=np.int64)

    def counts_of(idx: np.ndarray) -> list:
        if blob is None:
            return [counts_all[i] for i in idx.tolist()]
        buf, starts, ends = blob
        return [buf[a:b] for a, b in zip(starts[idx].tolist(), ends[idx].tolist())]

    def dicts_of(idx: np.ndarray, counts: list | None = None) -> list:
        if blob is None:
            return [flat[i] for i in idx.tolist()]
        counts = counts_of(idx) if counts is None else counts
        return [{"size": z, "counts": c} for z, c in zip(hw[idx].tolist(), counts)]

    need = need_runs[row, col] if need_runs is not None else np.ones(len(row), dtype=bool)
    rest = np.flatnonzero(~need & is_str)
    if len(rest) and known_areas is not None:
        known = np.concatenate(known_areas)[rest]
        have = known >= 0
        area[row[rest[have]], col[rest[have]]] = known[have]
        rest = rest[~have]
    if len(rest):
        _areas_only(dicts_of(rest), row[rest], col[rest], area, on_error)
    sel = np.flatnonzero(need | ~is_str)
    rs, cs = row[sel], col[sel]
    npix = hw[sel, 0] * hw[sel, 1]
    if not find_zero_counts and is_str[sel].all():  # predictions: checked without building their counts
        sel_counts = counts_of(sel)
        try:
            sel_area = check_compressed(sel_counts, npix)
        except RLEError as e:
            raise on_error(int(rs[e.index]), int(cs[e.index]), e.reason) from None
        zero_inside = np.zeros(len(sel), dtype=bool)
        rles = dicts_of(sel, sel_counts)
    else:
        counts, ptr = _frame_counts(counts_of(sel), is_str[sel], row[sel], col[sel], on_error)
        try:
            sel_area, zero_inside = check_counts(counts, ptr, npix)
        except RLEError as e:
            raise on_error(int(rs[e.index]), int(cs[e.index]), e.reason) from None
        rles = _c_rles(dicts_of(sel), is_str[sel], counts, ptr, hw[sel])
    area[rs, cs] = sel_area
    rle_index[rs, cs] = np.arange(len(sel))
    return VideoMasks(length, present, area, height, width, rle_index, rles, zero_inside)


def _frame_counts(
    given: list, is_str: np.ndarray, rows: np.ndarray, cols: np.ndarray, on_error: Callable
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of frames given as strings (decoded) or int arrays/lists, concatenated: ``(counts, ptr)``."""
    s_pos = np.flatnonzero(is_str)
    try:
        s_counts, s_ptr = decode_compressed_batch([given[i] for i in s_pos.tolist()])
    except RLEError as e:
        raise on_error(int(rows[s_pos[e.index]]), int(cols[s_pos[e.index]]), e.reason) from None
    if len(s_pos) == len(given):  # all compressed (always so for predictions): no re-assembly needed
        return s_counts, s_ptr
    pieces: list = [None] * len(given)
    for j, p in enumerate(s_pos.tolist()):
        pieces[p] = s_counts[s_ptr[j] : s_ptr[j + 1]]
    for p in np.flatnonzero(~is_str).tolist():
        c = given[p]
        pieces[p] = c if type(c) is np.ndarray and c.dtype == np.int64 else np.asarray(c, dtype=np.int64)
    ptr = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)), out=ptr[1:])
    counts = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return counts, ptr


def _c_rles(segs: list, is_str: np.ndarray, counts: np.ndarray, ptr: np.ndarray, hw: np.ndarray) -> list:
    """Compressed RLE dicts for the C code: given strings as they are (already checked), count arrays
    encoded by pycocotools' C ``frPyObjects`` (empty ones left as given)."""
    out = list(segs)
    # (no frames without counts: pycocotools writes past a 0-byte buffer for them; they have no pixels and
    # never reach the C walk)
    arr = np.flatnonzero(~is_str & (np.diff(ptr) > 0)).tolist()
    if arr:
        from pycocotools import mask as mask_utils

        c32 = counts.astype(np.uint32)  # checked <= h * w; pycocotools copies each list into uint32 anyway
        hs, ws, lo, hi = (
            hw[arr, 0].tolist(),
            hw[arr, 1].tolist(),
            ptr[arr].tolist(),
            ptr[np.add(arr, 1)].tolist(),
        )
        unc = [{"size": [h, w], "counts": c32[a:b]} for h, w, a, b in zip(hs, ws, lo, hi)]
        for i, r in zip(arr, mask_utils.frPyObjects(unc, 0, 0)):  # h, w are read from each dict
            out[i] = r
    return out


def _areas_only(segs: list, rows: np.ndarray, cols: np.ndarray, area: np.ndarray, on_error: Callable) -> None:
    """Areas of compressed frames ``segs`` (at ``[rows, cols]``) that need no intersection, with a cheap check
    of their characters (so that the C parser cannot read past a string)."""
    from pycocotools import mask as mask_utils

    strings = [s["counts"] for s in segs]
    if all(type(x) is str for x in strings):  # latin-1 maps one character to one byte, as per string
        joined = "".join(strings).encode("latin-1", errors="replace")
    else:
        joined = b"".join(x if isinstance(x, bytes) else x.encode("latin-1", "replace") for x in strings)
    ok = readable_strings(joined, np.fromiter(map(len, strings), dtype=np.int64, count=len(strings)))
    for k in np.flatnonzero(~ok).tolist():  # rare: the first bad one, with the full decoder's message
        try:
            decode_compressed_batch([strings[k]])
        except RLEError as e:
            raise on_error(int(rows[k]), int(cols[k]), e.reason) from None
    vals = [mask_utils.area(segs[i : i + _AREA_CHUNK]) for i in range(0, len(segs), _AREA_CHUNK)]
    area[rows, cols] = np.concatenate(vals).astype(np.int64)


def pair_ious(
    dt: VideoMasks,
    gt: VideoMasks,
    pd: np.ndarray,
    pg: np.ndarray,
    dt_group: np.ndarray,
    gt_group: np.ndarray,
    dt_block: np.ndarray | None = None,
    gt_block: np.ndarray | None = None,
) -> np.ndarray:
    """Video IoU of the pairs ``(pd[p], pg[p])`` of prediction and GT tracks.

    Args:
        pd, pg: int64 [P], the pairs; every pair of tracks with equal group (category) must be listed.
        dt_group, gt_group: int64 [N_dt], [N_gt], each track's group; only tracks of the same group are
            paired.
        dt_block, gt_block: optional int64 [N_dt], [N_gt], each track's video when the tracks of several
            videos are given together (one C call per video: frames of different videos never meet).

    Returns:
        float64 [P], equal to the official ``iou_seq`` value of each pair.
    """
    num_pairs = len(pd)
    if num_pairs == 0:
        return np.zeros(0)
    tmax = max(dt.present.shape[1], gt.present.shape[1])
    tmask = np.arange(tmax)[None, :] < np.minimum(dt.length[pd], gt.length[pg])[:, None]  # zip truncation
    dpres = _pad(dt.present, tmax, False)[pd] & tmask
    gpres = _pad(gt.present, tmax, False)[pg] & tmask
    both = dpres & gpres
    same = both & (_pad(dt.height, tmax, 0)[pd] == _pad(gt.height, tmax, 0)[pg])
    same &= _pad(dt.width, tmax, 0)[pd] == _pad(gt.width, tmax, 0)[pg]
    mismatch = both & ~same
    area_d = np.where(dpres, _pad(dt.area, tmax, 0)[pd], 0)
    area_g = np.where(gpres, _pad(gt.area, tmax, 0)[pg], 0)
    area_sum = np.where(mismatch, 0, area_d + area_g).sum(axis=1)
    pair_of = np.full((len(dt.length), len(gt.length)), -1, dtype=np.int64)
    pair_of[pd, pg] = np.arange(num_pairs)
    if dt_block is None or gt_block is None:
        dt_block, gt_block = np.zeros(len(dt.length), np.int64), np.zeros(len(gt.length), np.int64)
    inter, extra_union = _video_intersections(dt, gt, dt_group, gt_group, dt_block, gt_block, pair_of)
    union = area_sum - inter + extra_union  # sums of integers below 2**53: exact, as the official float sums
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _pad(x: np.ndarray, tmax: int, fill: int | bool = -1) -> np.ndarray:
    if x.shape[1] == tmax:
        return x
    return np.pad(x, ((0, 0), (0, tmax - x.shape[1])), constant_values=fill)


def _frames_meeting(
    dt: VideoMasks, gt: VideoMasks, dt_group: np.ndarray, gt_group: np.ndarray
) -> tuple[tuple, tuple, np.ndarray, np.ndarray]:
    """Checked frames of both sides as ``(rows, cols)``, and an int64 key per frame that is equal exactly for
    frames of the same (group, frame index, height, width)."""
    d_rc = np.nonzero(dt.rle_index >= 0)
    g_rc = np.nonzero(gt.rle_index >= 0)
    fields = [
        np.concatenate([dt_group[d_rc[0]], gt_group[g_rc[0]]]),
        np.concatenate([d_rc[1], g_rc[1]]),
        np.concatenate([dt.height[d_rc], gt.height[g_rc]]),
        np.concatenate([dt.width[d_rc], gt.width[g_rc]]),
    ]
    # One integer per (group, frame, h, w), mixed-radix (Python ints in the unlikely case int64 could
    # overflow); np.unique then makes the keys small and dense.
    bits = sum(int(v.max(initial=0)).bit_length() + 1 for v in fields)
    code = np.zeros(len(fields[0]), dtype=object if bits >= 62 else np.int64)
    for values in fields:
        code = code * (int(values.max(initial=0)) + 1) + values
    _, key = np.unique(code, return_inverse=True)
    key = key.reshape(-1).astype(np.int64)
    return d_rc, g_rc, key[: len(d_rc[0])], key[len(d_rc[0]) :]


def _video_intersections(
    dt: VideoMasks,
    gt: VideoMasks,
    dt_group: np.ndarray,
    gt_group: np.ndarray,
    dt_block: np.ndarray,
    gt_block: np.ndarray,
    pair_of: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (``pair_of[n, g]``, -1 for no pair): the summed frame intersections (official ``merge``
    values, zip truncation applied) and the union correction of GT frames with a count of 0 inside (official
    union minus ``area(d) + area(g) - I``), both float64 [P]."""
    num_pairs = int(pair_of.max()) + 1
    inter = np.zeros(num_pairs)
    extra = np.zeros(num_pairs)
    if not len(dt.rles) or not len(gt.rles):
        return inter, extra
    (dr, dc), (gr, gc), dkey, gkey = _frames_meeting(dt, gt, dt_group, gt_group)
    d_area = dt.area[dr, dc]
    g_area = gt.area[gr, gc]
    g_zero = gt.zero_inside[gt.rle_index[gr, gc]]
    # The fast path: frames with pixels, GT frames without a count of 0 inside, keys present on both sides.
    d_use = d_area > 0
    g_use = (g_area > 0) & ~g_zero
    d_use &= np.isin(dkey, gkey[g_use])
    g_use &= np.isin(gkey, dkey[d_use])
    di, gi = np.flatnonzero(d_use), np.flatnonzero(g_use)
    if len(di) and len(gi):
        a, b, i_ab = c_intersections(
            [dt.rles[k] for k in dt.rle_index[dr[di], dc[di]].tolist()],
            [gt.rles[k] for k in gt.rle_index[gr[gi], gc[gi]].tolist()],
            dkey[di],
            gkey[gi],
            dt.height[dr[di], dc[di]],
            gt.height[gr[gi], gc[gi]],
            d_area[di],
            int(max(dt.width.max(initial=0), gt.width.max(initial=0))),
            dt_block[dr[di]],
            gt_block[gr[gi]],
        )
        _add(inter, pair_of, dt.length, gt.length, dr[di[a]], gr[gi[b]], dc[di[a]], i_ab)
    # The official path for GT frames with a count of 0 inside (rare: pycocotools never writes one).
    for g in np.flatnonzero(g_zero).tolist():
        ds = np.flatnonzero(dkey == gkey[g])
        if not len(ds):
            continue
        grle = gt.rles[gt.rle_index[gr[g], gc[g]]]
        i_o, u_o = official_frames([dt.rles[dt.rle_index[dr[k], dc[k]]] for k in ds.tolist()], grle)
        _add(inter, pair_of, dt.length, gt.length, dr[ds], np.full(len(ds), gr[g]), dc[ds], i_o)
        fast_union = d_area[ds] + g_area[g] - i_o
        _add(extra, pair_of, dt.length, gt.length, dr[ds], np.full(len(ds), gr[g]), dc[ds], u_o - fast_union)
    return inter, extra


def _add(
    out: np.ndarray,
    pair_of: np.ndarray,
    d_len: np.ndarray,
    g_len: np.ndarray,
    rows_d: np.ndarray,
    rows_g: np.ndarray,
    t: np.ndarray,
    values: np.ndarray,
) -> None:
    """``out[pair] += values`` for frame ``t`` of tracks ``(rows_d, rows_g)``, where they form a pair and
    ``t`` is inside both frame lists (zip truncation)."""
    p = pair_of[rows_d, rows_g]
    keep = (p >= 0) & (t < np.minimum(d_len[rows_d], g_len[rows_g]))
    out += np.bincount(p[keep], weights=values[keep], minlength=len(out))
