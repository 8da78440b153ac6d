"""Spatio-temporal mask IoU between predicted and ground-truth tracks of one video, vectorised.

Official definition (``YTVOSeval.computeIoU.iou_seq``) for a prediction d and a GT g, frames paired with
``zip``
(so only the first ``min(len(d), len(g))`` frames count)::

    I = sum_t |d_t & g_t|           over frames where both are present
    U = sum_t |d_t | g_t|           (a frame with only one present adds that one's area)
    IoU = I / U if U > 0 else 0

A frame where both are present but their sizes differ adds 0 to I and U (``rleMerge`` returns an empty mask).

All intersections of all (prediction, GT, frame) triples of a video are computed at once: every prediction
frame
gets its own slice of one long pixel axis, the foreground-pixel count ``F(x)`` of all prediction runs left of
x
is a ``searchsorted`` away, and a GT run ``[s, e)`` placed in the slice of a prediction frame overlaps it by
``F(e) - F(s)`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vidseg.evaluation.rle_runs import (
    FrameRuns,
    RLEError,
    decode_compressed_batch,
    polygons_to_compressed,
    runs_from_counts,
)


@dataclass
class VideoMasks:
    """The frames of N tracks of one video (T = the longest frame list).

    Attributes:
        length: int64 [N], each track's frame-list length.
        present: bool [N, T], frame given (a truthy entry; an empty mask is present with area 0).
        area: int64 [N, T], mask areas (0 where absent).
        height, width: int64 [N, T], mask sizes (0 where absent).
        frame_index: int64 [N, T], row of ``runs`` holding the frame; -1 where absent or not decoded into
        runs.
        runs: foreground runs of the decoded frames.
    """

    length: np.ndarray
    present: np.ndarray
    area: np.ndarray
    height: np.ndarray
    width: np.ndarray
    frame_index: np.ndarray
    runs: FrameRuns


_AREA_CHUNK = (
    255  # pycocotools' area() fails on lists longer than 255 with numpy 2 (a uint8 placeholder array)
)


def decode_tracks(
    tracks: Sequence[Sequence],
    on_error: Callable[[int, int, str], Exception],
    video_size: tuple[int | None, int | None] = (None, None),
    need_runs: np.ndarray | None = None,
) -> VideoMasks:
    """Decode the frames of several tracks of one video, each RLE at most once.

    Args:
        tracks: N per-frame lists; an entry is None (absent), a compressed RLE dict (``counts`` str/bytes), an
            uncompressed RLE dict (``counts`` int array or list) or a polygon list (rasterised at
            ``video_size``).
        on_error: builds the exception for (track n, frame t, reason) of a malformed mask.
        video_size: ``(height, width)`` of the video, needed for polygons only.
        need_runs: optional bool [N, >=T]; compressed frames marked False are not decoded into runs: only
        their
            area is taken (pycocotools' C ``area``) after a check of their characters. Default: decode all.
    """
    n = len(tracks)
    length = np.array([len(f) for f in tracks], dtype=np.int64)
    tmax = int(length.max()) if n else 0
    shape = (n, tmax)
    present = np.zeros(shape, dtype=bool)
    area = np.zeros(shape, dtype=np.int64)
    height = np.zeros(shape, dtype=np.int64)
    width = np.zeros(shape, dtype=np.int64)
    frame_index = np.full(shape, -1, dtype=np.int64)
    where: list[tuple[int, int]] = []
    pieces, strings, string_pos = [], [], []
    area_only, area_where = [], []
    for i, frames in enumerate(tracks):
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
            present[i, t] = True
            height[i, t], width[i, t] = int(seg["size"][0]), int(seg["size"][1])
            counts = seg["counts"]
            is_str = isinstance(counts, (str, bytes))
            if is_str and need_runs is not None and not need_runs[i, t]:
                area_only.append(seg)
                area_where.append((i, t))
                continue
            frame_index[i, t] = len(where)
            where.append((i, t))
            if is_str:
                string_pos.append(len(pieces))
                strings.append(counts)
                pieces.append(None)
            else:
                pieces.append(np.asarray(counts, dtype=np.int64))
    if area_only:
        rows_only = np.array(area_where, dtype=np.int64).reshape(-1, 2).T
        _areas_only(area_only, rows_only[0], rows_only[1], area, on_error)
    try:
        s_counts, s_ptr = decode_compressed_batch(strings)
    except RLEError as e:
        raise on_error(*where[string_pos[e.index]], e.reason) from None
    if len(strings) == len(pieces):  # all compressed (always so for predictions): no re-assembly needed
        counts, ptr = s_counts, s_ptr
    else:
        for j, p in enumerate(string_pos):
            pieces[p] = s_counts[s_ptr[j] : s_ptr[j + 1]]
        ptr = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=ptr[1:])
        counts = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    rows = tuple(np.array(where, dtype=np.int64).reshape(-1, 2).T)
    try:
        runs = runs_from_counts(counts, ptr, height[rows] * width[rows])
    except RLEError as e:
        raise on_error(*where[e.index], e.reason) from None
    area[rows] = runs.area
    return VideoMasks(length, present, area, height, width, frame_index, runs)


def decode_packed_tracks(
    lengths: Sequence[int],
    present_t: Sequence[np.ndarray],
    sizes: Sequence[np.ndarray],
    segs: Sequence[Sequence[Mapping]],
    on_error: Callable[[int, int, str], Exception],
    need_runs: np.ndarray | None = None,
) -> VideoMasks:
    """:func:`decode_tracks` for tracks whose frames are all compressed RLEs (or all uncompressed int64
    arrays), already indexed (no Python loop over frames here).

    Args:
        lengths: N frame-list lengths.
        present_t: per track, int64 [F_n] indices of the given frames.
        sizes: per track, int64 [F_n, 2] their (height, width).
        segs: per track, the F_n RLE dicts (``counts`` str/bytes, or int64 arrays), in ``present_t`` order.
        on_error, need_runs: as :func:`decode_tracks`.
    """
    n = len(lengths)
    length = np.asarray(lengths, dtype=np.int64).reshape(n)
    tmax = int(length.max()) if n else 0
    shape = (n, tmax)
    nf = np.fromiter((len(t) for t in present_t), dtype=np.int64, count=n)
    row = np.repeat(np.arange(n, dtype=np.int64), nf)
    col = np.concatenate(present_t) if n else np.zeros(0, np.int64)
    hw = np.concatenate(sizes) if n else np.zeros((0, 2), np.int64)
    flat = [x for track in segs for x in track]
    present = np.zeros(shape, dtype=bool)
    present[row, col] = True
    height = np.zeros(shape, dtype=np.int64)
    width = np.zeros(shape, dtype=np.int64)
    height[row, col] = hw[:, 0]
    width[row, col] = hw[:, 1]
    area = np.zeros(shape, dtype=np.int64)
    frame_index = np.full(shape, -1, dtype=np.int64)
    need = need_runs[row, col] if need_runs is not None else np.ones(len(row), dtype=bool)
    sel = np.flatnonzero(need)
    rest = np.flatnonzero(~need)
    if len(rest):
        _areas_only([flat[i] for i in rest.tolist()], row[rest], col[rest], area, on_error)
    given = [flat[i]["counts"] for i in sel.tolist()]
    if all(type(x) is np.ndarray for x in given):  # uncompressed (GT): the counts as they are
        ptr = np.zeros(len(given) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, given), dtype=np.int64, count=len(given)), out=ptr[1:])
        counts = np.concatenate(given).astype(np.int64, copy=False) if given else np.zeros(0, np.int64)
    else:
        try:
            counts, ptr = decode_compressed_batch(given)
        except RLEError as e:
            raise on_error(int(row[sel[e.index]]), int(col[sel[e.index]]), e.reason) from None
    rs, cs = row[sel], col[sel]
    try:
        runs = runs_from_counts(counts, ptr, hw[sel, 0] * hw[sel, 1])
    except RLEError as e:
        raise on_error(int(rs[e.index]), int(cs[e.index]), e.reason) from None
    frame_index[rs, cs] = np.arange(len(sel))
    area[rs, cs] = runs.area
    return VideoMasks(length, present, area, height, width, frame_index, runs)


def _areas_only(segs: list, rows: np.ndarray, cols: np.ndarray, area: np.ndarray, on_error: Callable) -> None:
    """Areas of compressed frames ``segs`` (at ``[rows, cols]``) that need no runs, with a cheap check of
    their characters."""
    from pycocotools import mask as mask_utils

    strings = [s["counts"] for s in segs]
    if all(type(x) is str for x in strings):  # latin-1 maps one character to one byte, as per string
        joined = "".join(strings).encode("latin-1", errors="replace")
    else:
        joined = b"".join(x if isinstance(x, bytes) else x.encode("latin-1", "replace") for x in strings)
    c = np.frombuffer(joined, dtype=np.uint8) - np.uint8(48)
    ends = np.cumsum(np.fromiter(map(len, strings), dtype=np.int64, count=len(strings)))
    nonempty = np.diff(ends, prepend=0) > 0
    last = c[ends[nonempty] - 1]  # a string must not end inside a number (continuation bit 0x20)
    if (c > 63).any() or (last & 0x20).any():
        for k, x in enumerate(strings):  # rare: find the bad one with the full decoder's message
            try:
                decode_compressed_batch([x])
            except RLEError as e:
                raise on_error(int(rows[k]), int(cols[k]), e.reason) from None
    vals = [mask_utils.area(segs[i : i + _AREA_CHUNK]) for i in range(0, len(segs), _AREA_CHUNK)]
    area[rows, cols] = np.concatenate(vals).astype(np.int64)


def pair_ious(dt: VideoMasks, gt: VideoMasks, pd: np.ndarray, pg: np.ndarray) -> np.ndarray:
    """Video IoU of the pairs ``(pd[p], pg[p])`` of prediction and GT tracks.

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
    dfi = _pad(dt.frame_index, tmax)[pd]
    gfi = _pad(gt.frame_index, tmax)[pg]
    inter = np.zeros(num_pairs)
    pi, ti = np.nonzero(same)
    if len(pi):
        inter_trip = _intersections(dt, gt, dfi[pi, ti], gfi[pi, ti])
        inter = np.bincount(pi, weights=inter_trip, minlength=num_pairs)
    union = area_sum - inter  # sums of integers below 2**53: exact, as the official float sums
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _pad(x: np.ndarray, tmax: int, fill: int | bool = -1) -> np.ndarray:
    if x.shape[1] == tmax:
        return x
    return np.pad(x, ((0, 0), (0, tmax - x.shape[1])), constant_values=fill)


def _intersections(dt: VideoMasks, gt: VideoMasks, dframes: np.ndarray, gframes: np.ndarray) -> np.ndarray:
    """Pixel counts ``|dt frame dframes[k] & gt frame gframes[k]|`` (same-size masks), float64 [K]."""
    runs = dt.runs
    lens = runs.run_len
    g = gt.runs
    nrun = g.run_ptr[gframes + 1] - g.run_ptr[gframes]
    total = int(nrun.sum())
    if total == 0 or len(lens) == 0:
        return np.zeros(len(dframes))
    first = np.zeros(len(nrun), dtype=np.int64)
    np.cumsum(nrun[:-1], out=first[1:])
    idx = np.repeat(g.run_ptr[gframes] - first, nrun) + np.arange(total)
    # GT run positions moved from the GT mask's region to the paired prediction mask's region
    rows = np.repeat(dframes, nrun)
    s = g.run_start[idx] + (runs.region_start[rows] - g.region_start[np.repeat(gframes, nrun)])
    x = np.concatenate([s + g.run_len[idx], s])  # run ends, then run starts
    cov = _covered(dt, x)
    per_run = cov[:total] - cov[total:]
    return np.bincount(np.repeat(np.arange(len(dframes)), nrun), weights=per_run, minlength=len(dframes))


def _covered(dt: VideoMasks, x: np.ndarray) -> np.ndarray:
    """Prediction foreground pixels left of positions ``x`` [Q] on the common pixel axis, int64 [Q]:
    ``cumlen[j] + min(x - start[j], len[j])`` with ``j`` the last run starting at or before ``x`` (one binary
    search over all runs of the video; a per-column lookup table was tried instead and was slower)."""
    r = dt.runs
    # A first empty run at -1 makes j >= 0 for every x >= 0 (no masking needed).
    starts = np.concatenate([[-1], r.run_start])
    lens = np.concatenate([[0], r.run_len])
    before = np.cumsum(lens) - lens  # foreground pixels of all earlier runs
    j = np.searchsorted(starts, x, side="right") - 1
    return before[j] + np.minimum(x - starts[j], lens[j])
