"""Reading and checking the inputs of the YouTube-VIS / OVIS metric: a ground-truth JSON and a results list.

Both are kept close to their JSON form (frame masks stay compressed) so that memory does not grow with decoded
videos; :mod:`vidseg.evaluation.ytvis_eval` decodes one video at a time. The selection and ordering rules of
the official ``YTVOS`` / ``loadRes`` code are reproduced here (see ``docs/evaluation.md`` and the spec §1, §3,
§8): ground truth is grouped by video in ascending id order and kept in file order within a video; a
duplicated annotation id is replaced by the last annotation with that id (the official ``anns`` dict);
annotations of unknown videos or categories are left out; results get ``id = index + 1``.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from vidseg.evaluation.rle_json import loads_rle_json

OCCLUSION_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


_F = TypeVar("_F")


def without_gc(fn: _F) -> _F:
    """Run ``fn`` with Python's cyclic garbage collector paused (restored afterwards, also on errors).

    Loading a results file makes hundreds of thousands of dicts, lists and strings, none in a reference cycle;
    each allocation threshold the collector crosses walks all of them again, which costs 10-20% of the
    evaluation time. Plain reference counting still frees everything as usual."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _warm_allocator()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper  # type: ignore[return-value]


_ALLOCATOR_WARM = False


def _warm_allocator() -> None:
    """Let the C allocator keep numpy's temporaries of up to 32 MiB on its heap (once per process).

    glibc serves blocks above its mmap threshold (128 KiB at start) with a fresh ``mmap`` each time, so every
    few-MiB numpy temporary of the metric page-faults on first touch, again for every batch: about half of
    the metric's system time. glibc raises the threshold to the size of the largest ``mmap``-ed block freed
    so far (up to 32 MiB); allocating and freeing one such block (never touched: no page is faulted in) sets
    it at once, so the temporaries are reused from the heap instead. Elsewhere this only costs an unused
    allocation."""
    global _ALLOCATOR_WARM
    if not _ALLOCATOR_WARM:
        _ALLOCATOR_WARM = True
        block = np.empty((32 << 20) - (8 << 10), dtype=np.uint8)  # just under glibc's 32 MiB ceiling
        del block


class EvalInputError(ValueError):
    """Bad evaluation input; the message names the file, the entry index and the field."""


@dataclass
class GTTrack:
    """One ground-truth annotation (a track). ``frames``: per frame, the raw JSON mask or None."""

    index: int
    ann_id: Any
    video_id: Any
    category_id: Any
    ignore: bool
    crowd: bool
    avg_area: float
    occ_score: float | None
    frames: list
    present_t: np.ndarray | None = None  # int64 [F] given frames, when all are uncompressed RLE arrays
    sizes: np.ndarray | None = None  # int64 [F, 2]: their (height, width)
    given: list | None = None  # the F given frame masks


@dataclass
class DTTrack:
    """One predicted track from the results list (``id`` in the official code is ``index + 1``).

    Both loaders, :func:`load_results` and the forked one of :mod:`vidseg.evaluation.results_fork`, fill
    every field, in this one form.

    Attributes:
        index: the entry's index in the results list.
        video_id, category_id, score: as in the entry (``score`` a float).
        frames: per frame, the compressed RLE dict or None (a list, or a ``LazyFrames`` that behaves as one).
        present_t: int64 [F], the indices of the F given (non-null) frames.
        sizes: int64 [F, 2], their ``(height, width)``.
        given: the F given frame dicts in frame order, the same objects as in ``frames``.
        areas: int64 [F], the pycocotools ``area`` of each given frame, or -1 where the loader has not
            measured it (the evaluation then does). :func:`load_results` measures none; the forked loader
            measures every frame of an entry whose count strings all pass the character check.
        source: the results file (or ``"<results>"``), for messages.
    """

    index: int
    video_id: Any
    category_id: Any
    score: float
    frames: Sequence
    present_t: np.ndarray
    sizes: np.ndarray
    given: Sequence
    areas: np.ndarray
    source: str = "<results>"


@dataclass
class GroundTruth:
    """A loaded GT JSON.

    Attributes:
        source: file path (or ``"<dict>"``) for messages.
        video_ids: sorted unique video ids (all are evaluated, also those without annotations).
        video_sizes: video id -> ``(height, width)`` (None where the JSON lacks them).
        video_lengths: video id -> number of frames (``length`` or ``len(file_names)``; None if neither).
        category_ids: sorted unique category ids.
        category_names: category id -> name.
        has_annotations: whether the JSON has an ``annotations`` list.
        tracks: ``(video_id, category_id)`` -> GT tracks in the official order.
        has_occlusion: True when every evaluated annotation has an ``occlusion`` list (OVIS labels).
    """

    source: str
    video_ids: list
    video_sizes: dict
    video_lengths: dict
    category_ids: list
    category_names: dict
    has_annotations: bool
    tracks: dict = field(default_factory=dict)
    has_occlusion: bool = False


def _rle_hook(obj: dict) -> dict:
    """``json`` object hook: store uncompressed RLE counts as one int64 array instead of a list of Python ints
    (a 720p GT file holds millions of them; as Python ints they would take ~10x the memory)."""
    counts = obj.get("counts")
    if isinstance(counts, list) and "size" in obj:
        try:
            arr = np.asarray(counts)
        except (ValueError, TypeError):
            return obj
        if arr.ndim == 1 and (arr.dtype.kind in "iu" or len(arr) == 0):
            obj["counts"] = arr.astype(np.int64)
    return obj


def read_json(path: str | os.PathLike, *, hook: bool = False) -> Any:
    """Load a JSON file with clear errors for a missing file or invalid JSON."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if hook:  # uncompressed-RLE counts lists parsed by numpy (same result as json + _rle_hook)
            return loads_rle_json(data, _rle_hook, hook_skips_arrays=True)
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise EvalInputError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise EvalInputError(f"{path}: not a UTF-8 JSON file ({e})") from None


def _need(entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise EvalInputError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise EvalInputError(f"{where}: missing required field '{key}'")
    return entry[key]


def _check_size(seg: Mapping, where: str) -> None:
    size = seg.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in size)
    ):
        raise EvalInputError(f"{where}: field 'size' must be [height, width] with non-negative integers")


def _check_gt_frame(seg: Any, where: str) -> None:
    if isinstance(seg, list):
        if not all(isinstance(p, (list, tuple)) for p in seg):
            raise EvalInputError(f"{where}: a polygon mask must be a list of [x1, y1, x2, y2, ...] lists")
        return
    if not isinstance(seg, Mapping) or "counts" not in seg or "size" not in seg:
        raise EvalInputError(f"{where}: expected an RLE {{'size', 'counts'}}, a polygon list or null")
    _check_size(seg, where)
    counts = seg["counts"]
    if isinstance(counts, (str, bytes)):
        return
    if isinstance(counts, list):  # a dict given in memory (files get arrays from the JSON hook)
        try:
            counts = np.asarray(counts)
        except (ValueError, TypeError):
            counts = None
        if counts is not None and len(counts) == 0:
            return
    if isinstance(counts, np.ndarray) and counts.ndim == 1 and counts.dtype.kind in "iu":
        if len(counts) and counts.min() < 0:
            raise EvalInputError(f"{where}: field 'counts' has negative run lengths")
        return
    raise EvalInputError(f"{where}: field 'counts' must be a string or a list of non-negative integers")


def _frame_length_warning(n_bad: int, what: str, source: str) -> None:
    if n_bad:
        warnings.warn(
            f"{source}: {n_bad} {what} have a frame list whose length differs from their video's "
            f"length; they are "
            "scored as the official code scores them (frames compared up to the shorter list)",
            stacklevel=3,
        )


@without_gc
def load_ground_truth(gt: str | os.PathLike | Mapping) -> GroundTruth:
    """Load and check a YouTube-VIS / OVIS ground-truth JSON (path or already-loaded dict)."""
    source = os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else "<ground-truth dict>"
    data = read_json(gt, hook=True) if isinstance(gt, (str, os.PathLike)) else gt
    if not isinstance(data, Mapping):
        raise EvalInputError(
            f"{source}: the ground truth must be a JSON object with 'videos' and 'categories'"
        )
    videos = _need(data, "videos", source)
    categories = _need(data, "categories", source)
    sizes, lengths = {}, {}
    for i, v in enumerate(videos):
        vid = _need(v, "id", f"{source}: videos[{i}]")
        sizes[vid] = (v.get("height"), v.get("width"))
        length = v.get("length", len(v["file_names"]) if isinstance(v.get("file_names"), list) else None)
        lengths[vid] = length
    names = {}
    for i, c in enumerate(categories):
        names[_need(c, "id", f"{source}: categories[{i}]")] = c.get("name", str(c["id"]))
    out = GroundTruth(
        source=source,
        video_ids=sorted(sizes),
        video_sizes=sizes,
        video_lengths=lengths,
        category_ids=sorted(names),
        category_names=names,
        has_annotations=isinstance(data.get("annotations"), list),  # OVIS files may hold "annotations": null
    )
    if not out.has_annotations:
        return out
    anns = data["annotations"]
    by_id: dict[Any, int] = {}
    by_video: dict[Any, list[int]] = defaultdict(list)
    for i, a in enumerate(anns):
        by_id[_need(a, "id", f"{source}: annotations[{i}]")] = i
        by_video[_need(a, "video_id", f"{source}: annotations[{i}]")].append(i)
    if len(by_id) < len(anns):
        warnings.warn(
            f"{source}: {len(anns) - len(by_id)} annotations repeat an earlier 'id'; as in the "
            f"official code, each "
            "occurrence is replaced by the last annotation with that id",
            stacklevel=2,
        )
    unknown_video = sum(len(ix) for v, ix in by_video.items() if v not in sizes)
    if unknown_video:
        warnings.warn(
            f"{source}: {unknown_video} annotations refer to videos not in 'videos'; left out", stacklevel=2
        )
    cat_set = set(out.category_ids)
    parsed: dict[int, GTTrack] = {}
    n_len_bad = 0
    tracks: dict[tuple, list[GTTrack]] = defaultdict(list)
    for vid in out.video_ids:
        for i0 in by_video.get(vid, []):
            if _need(anns[i0], "category_id", f"{source}: annotations[{i0}]") not in cat_set:
                continue
            i = by_id[anns[i0]["id"]]  # duplicate ids: the official anns dict keeps the last one
            if i not in parsed:
                parsed[i] = _parse_gt_track(anns[i], i, source)
                n = lengths.get(parsed[i].video_id)
                n_len_bad += n is not None and len(parsed[i].frames) != n
            tr = parsed[i]
            tracks[tr.video_id, tr.category_id].append(tr)
    unknown_cat = sum(1 for a in anns if a.get("category_id") not in cat_set)
    if unknown_cat:
        warnings.warn(
            f"{source}: {unknown_cat} annotations have a category not in 'categories'; left out", stacklevel=2
        )
    _frame_length_warning(n_len_bad, "annotations", source)
    out.tracks = dict(tracks)
    with_occ = [tr.occ_score is not None for trs in out.tracks.values() for tr in trs]
    out.has_occlusion = bool(with_occ) and all(with_occ)
    if any(with_occ) and not all(with_occ):
        missing = next(tr.index for trs in out.tracks.values() for tr in trs if tr.occ_score is None)
        raise EvalInputError(
            f"{source}: annotations[{missing}]: missing field 'occlusion' (other annotations have "
            f"occlusion labels)"
        )
    return out


def _parse_gt_track(a: Mapping, i: int, source: str) -> GTTrack:
    where = f"{source}: annotations[{i}]"
    segs = _need(a, "segmentations", where)
    areas = _need(a, "areas", where)
    iscrowd = _need(a, "iscrowd", where)
    if not isinstance(segs, list):
        raise EvalInputError(f"{where}: field 'segmentations' must be a list (one entry per frame)")
    if not isinstance(areas, list):
        raise EvalInputError(f"{where}: field 'areas' must be a list (one entry per frame)")
    usual, packed = _usual_gt_frames(segs), True
    if usual is not None:
        frames, present_t, sizes, arrays = usual
    else:  # anything but int64 count arrays with [h, w] int sizes: frame by frame
        frames, present_t, sizes, arrays = [], [], [], []
        for t, s in enumerate(segs):
            if not s:
                frames.append(None)
                continue
            frames.append(s)
            present_t.append(t)
            _check_gt_frame(s, f"{where}: segmentations[{t}]")
            if isinstance(s, Mapping) and isinstance(s["counts"], np.ndarray):
                arrays.append(s["counts"])
                sizes.append((int(s["size"][0]), int(s["size"][1])))
            else:
                packed = False  # polygons, strings or lists: decoded frame by frame
    if arrays and sum(map(len, arrays)) and np.concatenate(arrays).min() < 0:
        for t in present_t:  # rare: the first frame with a negative count, with the usual message
            _check_gt_frame(segs[t], f"{where}: segmentations[{t}]")
    try:
        present = [x for x in areas if x]
        avg_area = float(np.array(present).mean()) if present else 0.0  # exactly the official expression
    except TypeError:
        raise EvalInputError(f"{where}: field 'areas' must hold numbers or null") from None
    occ = None
    if "occlusion" in a:
        levels = a["occlusion"]
        try:
            scores = sorted(OCCLUSION_SCORES[x] for x in levels if x is not None)
        except (KeyError, TypeError):
            raise EvalInputError(
                f"{where}: field 'occlusion' must hold {sorted(OCCLUSION_SCORES)} or null per frame"
            ) from None
        if not scores:
            raise EvalInputError(f"{where}: field 'occlusion' has no labelled frame")
        top = scores[-math.ceil(len(scores) / 2) :]  # OVIS: mean of the most occluded half of the frames
        occ = sum(top) / len(top)
    return GTTrack(
        index=i,
        ann_id=a["id"],
        video_id=a["video_id"],
        category_id=a["category_id"],
        ignore=bool(iscrowd),
        crowd=int(iscrowd) != 0,
        avg_area=avg_area,
        occ_score=occ,
        frames=frames,
        present_t=np.array(present_t, dtype=np.int64) if packed else None,
        sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2) if packed else None,
        given=[frames[t] for t in present_t] if packed else None,
    )


_INT64 = np.dtype(np.int64)


def _usual_gt_frames(segs: list) -> tuple | None:
    """``(frames, present_t, sizes, arrays)`` of a GT frame list whose given frames all are dicts
    with an int64 count array (from the JSON hook) and a ``[h, w]`` list of non-negative ints, checked with
    type sets instead of a loop over frames; None for anything else."""
    frames = [s if s else None for s in segs]
    present_t = [t for t, s in enumerate(segs) if s]
    given = [segs[t] for t in present_t]
    if not given:
        return frames, present_t, [], []
    if set(map(type, given)) != {dict}:
        return None
    counts = [g.get("counts") for g in given]
    size = [g.get("size") for g in given]
    if set(map(type, counts)) != {np.ndarray} or set(map(type, size)) != {list} or set(map(len, size)) != {2}:
        return None
    if {c.dtype for c in counts} != {_INT64} or {c.ndim for c in counts} != {1}:
        return None
    flat = [v for z in size for v in z]
    if set(map(type, flat)) != {int} or min(flat) < 0:
        return None
    return frames, present_t, size, counts


def _usual_sizes(given: list) -> list | None:
    """``[h, w]`` of each given result frame when all are dicts with a ``str`` ``counts`` and two
    non-negative int sizes (what every results writer produces); None otherwise."""
    try:
        counts = [s["counts"] for s in given]
        sizes = [s["size"] for s in given]
    except (TypeError, KeyError, IndexError):
        return None
    if not given:
        return []
    # type sets rather than all(...) over generators: this runs for every frame of every result
    if set(map(type, counts)) != {str} or set(map(type, sizes)) != {list} or set(map(len, sizes)) != {2}:
        return None
    flat = [v for z in sizes for v in z]
    if set(map(type, flat)) != {int} or min(flat) < 0:
        return None
    return sizes


def _check_result_frame(s: Any, where: str) -> tuple[int, int]:
    """Full check of one given result frame; returns its ``(h, w)``."""
    if not isinstance(s, Mapping) or "counts" not in s or "size" not in s:
        raise EvalInputError(f"{where}: expected a compressed RLE {{'size', 'counts'}} or null")
    _check_size(s, where)
    if not isinstance(s["counts"], (str, bytes)):
        raise EvalInputError(
            f"{where}: field 'counts' must be a compressed RLE string (as pycocotools writes)"
        )
    return int(s["size"][0]), int(s["size"][1])


@without_gc
def load_results(
    results: str | os.PathLike | Sequence[Mapping], gt: GroundTruth, *, source: str | None = None
) -> list[DTTrack]:
    """Load and check a results list (path or list of dicts) against ``gt``.

    Every entry needs ``video_id`` (one of the GT videos), ``category_id``, ``score`` and ``segmentations``
    (per frame a compressed RLE ``{"size": [h, w], "counts": str}`` or null). Entries whose category is not a
    GT category are dropped with a warning (the official code drops them silently). Masks are decoded later; a
    malformed count string is reported then, naming the entry and frame.
    """
    if isinstance(results, (str, os.PathLike)):
        source = source or os.fspath(results)
        results = read_json(results)
    source = source or "<results>"
    if not isinstance(results, list):
        raise EvalInputError(f"{source}: results must be a JSON list of predictions")
    if not results:
        warnings.warn(f"{source}: the results list is empty; every defined stat is 0", stacklevel=2)
    videos = set(gt.video_ids)
    cats = set(gt.category_ids)
    out: list[DTTrack] = []
    n_len_bad = n_unknown_cat = 0
    for i, r in enumerate(results):
        where = f"{source}: entry {i}"
        vid = _need(r, "video_id", where)
        if vid not in videos:
            raise EvalInputError(f"{where}: field 'video_id' = {vid!r} is not a video of {gt.source}")
        cat = _need(r, "category_id", where)
        score = _need(r, "score", where)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise EvalInputError(f"{where}: field 'score' must be a number")
        segs = _need(r, "segmentations", where)
        if not isinstance(segs, list):
            raise EvalInputError(f"{where}: field 'segmentations' must be a list (one entry per frame)")
        present_t = [t for t, s in enumerate(segs) if s]
        given = [segs[t] for t in present_t]
        sizes = _usual_sizes(given)  # the usual entry, checked in bulk; anything else frame by frame
        if sizes is None:
            sizes = [_check_result_frame(segs[t], f"{where}: segmentations[{t}]") for t in present_t]
        frames = [s if s else None for s in segs]
        n = gt.video_lengths.get(vid)
        n_len_bad += n is not None and len(frames) != n
        if cat not in cats:
            n_unknown_cat += 1
            continue
        out.append(
            DTTrack(
                index=i,
                video_id=vid,
                category_id=cat,
                score=float(score),
                frames=frames,
                source=source,
                present_t=np.array(present_t, dtype=np.int64),
                sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
                given=given,
                areas=np.full(len(present_t), -1, dtype=np.int64),  # measured later, by the evaluation
            )
        )
    if n_unknown_cat:
        warnings.warn(
            f"{source}: {n_unknown_cat} entries have a category_id that is not a GT category; left out",
            stacklevel=2,
        )
    _frame_length_warning(n_len_bad, "result entries", source)
    return out


def warn_unusual_results(dts: Sequence[DTTrack], gt: GroundTruth) -> None:
    """Warn (naming the first entries) about predictions that are scored as the official code scores them
    but are probably wrong: an RLE ``size`` other than its video's ``[height, width]`` (the official code
    hangs on some such files) and a NaN ``score`` (NaN has no rank: where such a track falls in the
    ranking is arbitrary). Vectorised over all frames: a few milliseconds for YouTube-VIS sized results."""
    if not dts:
        return
    source = dts[0].source
    scores = np.fromiter((d.score for d in dts), dtype=np.float64, count=len(dts))
    nan = np.flatnonzero(np.isnan(scores))
    if len(nan):
        warnings.warn(
            f"{source}: {len(nan)} entries have a NaN 'score' ({_first_entries(dts, nan)}); their place in "
            "the ranking is arbitrary",
            stacklevel=2,
        )
    sizes = [d.sizes if d.sizes is not None else _frame_sizes(d.frames) for d in dts]
    expected = [gt.video_sizes.get(d.video_id) for d in dts]
    counts = np.fromiter(
        (len(z) if e is not None else 0 for z, e in zip(sizes, expected)), np.int64, len(dts)
    )
    if not counts.any():
        return
    given = np.concatenate([z for z, e in zip(sizes, expected) if e is not None and len(z)]).reshape(-1, 2)
    # One int64 per (h, w): a 1-D repeat and compare, several times faster than on [F, 2] rows.
    code = given[:, 0] << 32 | given[:, 1]
    want = np.array([(e[0] << 32) | e[1] for e, n in zip(expected, counts) if n], dtype=np.int64)
    wrong_frame = code != np.repeat(want, counts[counts > 0])
    if not wrong_frame.any():
        return
    track_of_frame = np.repeat(np.arange(len(dts)), counts)
    bad = np.unique(track_of_frame[wrong_frame])
    k = int(np.flatnonzero(wrong_frame)[0])  # the first wrong frame (of track bad[0])
    first = dts[int(bad[0])]
    j = k - int(counts[: bad[0]].sum())  # its position among the track's given frames
    frame = int(first.present_t[j]) if first.present_t is not None else j
    h, w = gt.video_sizes[first.video_id]
    warnings.warn(
        f"{source}: {len(bad)} entries have RLE masks whose 'size' is not their video's size "
        f"({_first_entries(dts, bad)}); entry {first.index}: segmentations[{frame}] has size "
        f"{given[k].tolist()}, video {first.video_id!r} is [{h}, {w}]. They are scored as the official code "
        "scores them; check that the masks were pasted back at the original video size",
        stacklevel=2,
    )


def _first_entries(dts: Sequence[DTTrack], idx: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(str(dts[i].index) for i in idx[:n])
    return f"entr{'y' if len(idx) == 1 else 'ies'} {shown}{' ...' if len(idx) > n else ''}"


def _frame_sizes(frames: list) -> np.ndarray:
    out = [f["size"] for f in frames if isinstance(f, Mapping) and "size" in f]
    return np.array(out, dtype=np.int64).reshape(-1, 2)
