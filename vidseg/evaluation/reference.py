"""The YouTube-VIS / OVIS metric stated plainly: the readable reference the fast metric is tested against.

:func:`vidseg.evaluation.evaluate_ytvis` computes the official numbers fast (batched numpy, one C call per
video, forked workers). This module computes the same numbers the obvious way, with plain loops over
videos, categories, ranges, thresholds, detections and ground-truth tracks, and pycocotools' per-frame
``merge`` / ``area``, as the official code (``youtubevos/cocoapi`` ``ytvoseval.py``; ``qjy981010/cocoapi``
``oviseval.py`` for OVIS) does. It is slow on purpose and meant to be read; the tests compare the fast
metric with it (``tests/evaluation/test_evaluation_random.py``). The project's specification of the metric,
read from the official code, is ``ytvis-eval.md`` in the project's shared specification folder; the section
numbers below are its §.

The metric, step by step:

1. **Inputs** (§1). The ground truth lists ``videos``, ``categories`` and ``annotations`` (one per object
   track: ``segmentations`` and ``areas`` per frame, ``iscrowd``, for OVIS ``occlusion`` per frame). A
   GT frame is an uncompressed RLE (list counts), a compressed RLE (string counts) or polygons; it is
   turned into a compressed RLE (polygons rasterised at the video's size and merged). A falsy entry means
   "absent". The results list holds one entry per predicted track: ``video_id``, ``category_id``,
   ``score`` and ``segmentations`` (per frame a compressed RLE or null). Every result video must be a GT
   video; results of a category that is not a GT category are dropped. Prediction ``i`` (file order)
   has ``id = i + 1``. Annotations that repeat an ``id`` all read as the last annotation with that id
   (the official ``anns`` dict keeps the last one).
2. **Video IoU** (§2). For a prediction ``d`` and a GT track ``g`` the frames are paired with ``zip``, so
   only the shorter list's frames count; ``I`` and ``U`` add up per-frame intersections and unions
   (``area(merge([d_t, g_t], intersect))``); a frame where only one side is present adds its area to
   ``U``; frames of different sizes add 0 to both (``merge`` gives an empty mask). ``IoU = I / U``, 0 when
   ``U`` is 0. OVIS requires equal frame-list lengths.
3. **Size** (§3). A track's area is the mean of its non-zero, non-null frame areas (0 without any): for
   GT from the ``areas`` field, for predictions from their masks. Ranges: all ``[0, 1e10]``, small
   ``[0, 128^2]``, medium ``[128^2, 256^2]``, large ``[256^2, 1e10]``, both bounds inclusive.
4. **Occlusion** (§7, OVIS with labels on every GT track). A GT track's occlusion score is the mean of
   the most occluded half (``ceil(n / 2)``) of its labelled frames (no = 0, slight = .25, severe = .75).
   Ranges: all ``[0, 1]``, light ``[0, .25]``, medium ``[.25, .5]``, heavy ``[.5, 1]``, inclusive. They
   only decide which GT is ignored.
5. **Matching** (§4), per (video, category, area range, occlusion range), skipped when the pair has
   neither GT nor predictions. A GT is ignored when crowd or outside the ranges; GTs are stably sorted
   with the ignored ones last. Predictions are stably sorted by descending score, the first 100 kept. At
   each IoU threshold ``t`` of ``linspace(.5, .95, 10)`` each prediction in turn takes the GT with the
   highest IoU ``>= min(t, 1 - 1e-10)`` (the later one on ties), skipping GTs already taken (crowd GTs
   can be taken many times) and stopping at the first ignored GT once it holds a non-ignored one. A
   prediction matched to an ignored GT is ignored; one matched to a GT with ``id`` 0 counts as no match
   (a false positive); an unmatched one outside the area range is ignored.
6. **Accumulation** (§5), per (category, area range, occlusion range, maxDets in 1/10/100): the first
   ``maxDets`` predictions of every (video, category), videos in ascending id, stably sorted by
   descending score. With ``npig`` the number of non-ignored GT (none: precision and recall stay -1,
   the category is left out): recall ``tp / npig`` and precision ``tp / (tp + fp + eps)`` along that
   order, ignored predictions counting for neither; the precision is made non-increasing from the right
   and read at the 101 recall thresholds ``linspace(0, 1, 101)`` (0 past the last recall reached).
7. **Stats** (§6): means of the precision (AP) or recall (AR) entries ``> -1`` over a slice: AP (all
   thresholds, all areas, 100 detections), AP50, AP75, APs/APm/APl, AR1/AR10/AR100, ARs/ARm/ARl, and
   for OVIS with labels AP/AR light/medium/heavy (all areas, 100 detections); -1 when the slice is empty.

Quirk 12 of ``docs/evaluation.md`` (RLE counts of 0 inside a mask) holds here too, because ``merge`` is the
official per-frame operation. Input checks and error messages are not restated: they are those of the fast
metric, in ``vidseg/evaluation/ytvis_data.py``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["ReferenceResult", "reference_ytvis", "occlusion_score", "video_iou"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # the 9th is 0.8999999999999999, as in the official code
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0, 1e10), "small": (0, 128**2), "medium": (128**2, 256**2), "large": (256**2, 1e10)}
OCCLUSION_RANGES = {"all": (0.0, 1.0), "light": (0.0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1.0)}
OCCLUSION_LEVELS = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}

# stat name -> (AP or AR, IoU threshold or None for all, area range, occlusion range, maxDets)
_YTVIS_STATS = {
    "AP": ("AP", None, "all", "all", 100),
    "AP50": ("AP", 0.5, "all", "all", 100),
    "AP75": ("AP", 0.75, "all", "all", 100),
    "APs": ("AP", None, "small", "all", 100),
    "APm": ("AP", None, "medium", "all", 100),
    "APl": ("AP", None, "large", "all", 100),
    "AR1": ("AR", None, "all", "all", 1),
    "AR10": ("AR", None, "all", "all", 10),
    "AR100": ("AR", None, "all", "all", 100),
    "ARs": ("AR", None, "small", "all", 100),
    "ARm": ("AR", None, "medium", "all", 100),
    "ARl": ("AR", None, "large", "all", 100),
}
_OCCLUSION_STATS = {
    f"{kind}_{occ}": (kind, None, "all", occ, 100)
    for kind in ("AP", "AR")
    for occ in ("light", "medium", "heavy")
}


@dataclass
class ReferenceResult:
    """What :func:`reference_ytvis` computes.

    Attributes:
        stats: stat name -> value (12 YouTube-VIS stats, or 18 for OVIS with occlusion labels, in the order
            of ``vidseg.evaluation.YTVIS_STATS`` / ``OVIS_STATS``); -1 where undefined.
        precision: float64 [T=10, R=101, K, A=4, O, M=3] (O = 4 occlusion ranges with labels, else 1).
        recall: float64 [T, K, A, O, M].
        category_ids: the K sorted GT category ids.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    category_ids: list


def _read(obj: Any) -> Any:
    if isinstance(obj, (str, os.PathLike)):
        with open(obj) as f:
            return json.load(f)
    return obj


def _gt_rle(seg: Any, video: Mapping) -> dict | None:
    """Step 1: a GT frame as a compressed RLE (the official ``annToRLE``), None when absent."""
    if not seg:
        return None
    if isinstance(seg, list):  # polygons: rasterised at the video's size, their union
        return mask_utils.merge(mask_utils.frPyObjects(seg, video["height"], video["width"]))
    if isinstance(seg["counts"], list):  # uncompressed RLE: its own size
        return mask_utils.frPyObjects(seg, seg["size"][0], seg["size"][1])
    return seg


def _mean_area(areas: Sequence) -> float:
    """Step 3: mean of the non-zero, non-null frame areas (0 without any)."""
    present = [a for a in areas if a]
    return float(np.mean(present)) if present else 0.0


def occlusion_score(levels: Sequence[str | None]) -> float:
    """Step 4: the OVIS occlusion score of a GT track: the mean of the most occluded half of its labelled
    frames (no = 0, slight = .25, severe = .75; unlabelled frames skipped)."""
    scores = sorted(OCCLUSION_LEVELS[x] for x in levels if x is not None)
    top = scores[len(scores) - math.ceil(len(scores) / 2) :]
    return sum(top) / len(top)


def video_iou(d: Sequence[dict | None], g: Sequence[dict | None]) -> float:
    """Step 2: the video IoU of two per-frame lists of compressed RLEs (None where absent)."""
    inter = union = 0.0
    for d_t, g_t in zip(d, g):  # zip: only the frames both lists have
        if d_t and g_t:  # different sizes: merge gives an empty mask, so the frame adds 0 to both
            inter += float(mask_utils.area(mask_utils.merge([d_t, g_t], intersect=True)))
            union += float(mask_utils.area(mask_utils.merge([d_t, g_t], intersect=False)))
        elif g_t:
            union += float(mask_utils.area(g_t))
        elif d_t:
            union += float(mask_utils.area(d_t))
    return inter / union if union > 0 else 0.0


def _ground_truth(gt: Mapping, cat_ids: list, with_occlusion: bool) -> dict:
    """Step 1 for the GT: ``(video id, category id) -> [track]``, tracks as plain dicts."""
    videos = {v["id"]: v for v in gt["videos"]}
    last_with_id = {a["id"]: a for a in gt["annotations"]}
    by_video: dict = {}
    for a in gt["annotations"]:
        by_video.setdefault(a["video_id"], []).append(a)
    tracks: dict = {}
    for vid in sorted(videos):  # GT videos in ascending id, each video's annotations in file order
        for a in by_video.get(vid, []):
            if a["category_id"] not in cat_ids:
                continue
            a = last_with_id[a["id"]]  # a repeated id reads as the last annotation with it
            track = {
                "id": a["id"],
                "masks": [_gt_rle(s, videos[a["video_id"]]) for s in a["segmentations"]],
                "area": _mean_area(a["areas"]),
                "crowd": bool(a["iscrowd"]),
                "occlusion": occlusion_score(a["occlusion"]) if with_occlusion else 0.0,
            }
            tracks.setdefault((a["video_id"], a["category_id"]), []).append(track)
    return tracks


def _predictions(results: Sequence[Mapping], video_ids: set, cat_ids: list) -> dict:
    """Step 1 for the results: ``(video id, category id) -> [prediction]`` in file order."""
    preds: dict = {}
    for i, r in enumerate(results):
        if r["video_id"] not in video_ids:
            raise ValueError(f"result {i}: video_id {r['video_id']!r} is not a GT video")
        if r["category_id"] not in cat_ids:
            continue  # dropped, as the official getAnnIds(catIds=...) does
        masks = [s if s else None for s in r["segmentations"]]
        areas = [int(mask_utils.area(m)) if m is not None else None for m in masks]
        pred = {"id": i + 1, "masks": masks, "area": _mean_area(areas), "score": r["score"]}
        preds.setdefault((r["video_id"], r["category_id"]), []).append(pred)
    return preds


def _gt_ignored(g: dict, area_rng: tuple, occ_rng: tuple) -> bool:
    """Step 5: a GT track is ignored when crowd or outside the area or occlusion range."""
    inside = area_rng[0] <= g["area"] <= area_rng[1] and occ_rng[0] <= g["occlusion"] <= occ_rng[1]
    return g["crowd"] or not inside


def _match(preds: list, gts: list, ious: list, area_rng: tuple, occ_rng: tuple) -> list:
    """Step 5 for one (video, category, area range, occlusion range): per IoU threshold, per prediction
    ``(true positive, ignored)``. ``preds`` are in score order, ``ious[i][j]`` of prediction i and GT j."""
    lo, hi = area_rng
    ignored = [_gt_ignored(g, area_rng, occ_rng) for g in gts]
    order = sorted(range(len(gts)), key=lambda j: ignored[j])  # stable: non-ignored GT first
    out = []
    for t in IOU_THRESHOLDS:
        taken = [False] * len(gts)
        per_pred = []
        for i, d in enumerate(preds):
            best, m = min(t, 1 - 1e-10), -1
            for j in order:
                if taken[j] and not gts[j]["crowd"]:
                    continue
                if m > -1 and not ignored[m] and ignored[j]:
                    break  # holds a regular GT: the ignored ones (sorted last) cannot replace it
                if ious[i][j] >= best:
                    best, m = ious[i][j], j
            outside = not lo <= d["area"] <= hi
            if m == -1:
                per_pred.append((False, outside))
            else:
                taken[m] = True
                is_tp = gts[m]["id"] != 0  # a match to GT id 0 is stored as "no match": a false positive
                per_pred.append((is_tp, ignored[m] or (not is_tp and outside)))
        out.append(per_pred)
    return out


def _precision_recall(entries: list, t: int, max_det: int, npig: int) -> tuple[np.ndarray, float]:
    """Step 6 for one threshold and maxDets: the 101 precision values and the recall."""
    items = [(p["score"], matched[t][j]) for preds, matched in entries for j, p in enumerate(preds[:max_det])]
    items.sort(key=lambda it: -it[0])  # stable: ties keep video order, then score order within a video
    tp = fp = 0
    recalls, precisions = [], []
    for _, (is_tp, is_ignored) in items:
        if not is_ignored:
            tp, fp = tp + is_tp, fp + (not is_tp)
        recalls.append(tp / npig)
        precisions.append(tp / (tp + fp + np.spacing(1)))
    for i in range(len(precisions) - 2, -1, -1):  # non-increasing from the right
        precisions[i] = max(precisions[i], precisions[i + 1])
    q = np.zeros(len(RECALL_THRESHOLDS))
    for r, threshold in enumerate(RECALL_THRESHOLDS):
        reached = [i for i, rc in enumerate(recalls) if rc >= threshold]
        if not reached:
            break  # past the last recall reached: 0
        q[r] = precisions[reached[0]]
    return q, (recalls[-1] if items else 0.0)


def reference_ytvis(
    gt: str | os.PathLike | Mapping, results: str | os.PathLike | Sequence[Mapping], *, ovis: bool = False
) -> ReferenceResult:
    """The YouTube-VIS metric (OVIS rules with ``ovis``) of a results list against a ground truth, computed
    as the module docstring states it. Paths or loaded JSON; the inputs are not modified.

    Raises:
        ValueError: a result for a video not in the GT; with ``ovis``, frame lists of different lengths.
    """
    gt, results = _read(gt), _read(results)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    video_ids = sorted(v["id"] for v in gt["videos"])
    evaluated = [a for a in gt["annotations"] if a["video_id"] in video_ids and a["category_id"] in cat_ids]
    with_occlusion = ovis and bool(evaluated) and all("occlusion" in a for a in evaluated)
    occ_ranges = OCCLUSION_RANGES if with_occlusion else {"all": OCCLUSION_RANGES["all"]}
    gts = _ground_truth(gt, cat_ids, with_occlusion)
    preds = _predictions(results, set(video_ids), cat_ids)

    T, R, K, A, O, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cat_ids), 4, len(occ_ranges), 3
    precision = -np.ones((T, R, K, A, O, M))
    recall = -np.ones((T, K, A, O, M))
    for k, c in enumerate(cat_ids):
        # Steps 2 and 5: per video, the top 100 predictions by score and their IoUs with every GT
        per_video = []
        for v in video_ids:
            g = gts.get((v, c), [])
            d = sorted(preds.get((v, c), []), key=lambda p: -p["score"])[: MAX_DETS[-1]]
            if not g and not d:
                continue
            if ovis and any(len(x["masks"]) != len(y["masks"]) for x in d for y in g):
                raise ValueError(f"video {v}: OVIS needs prediction and GT frame lists of equal length")
            per_video.append((g, d, [[video_iou(x["masks"], y["masks"]) for y in g] for x in d]))
        for a, area_rng in enumerate(AREA_RANGES.values()):
            for o, occ_rng in enumerate(occ_ranges.values()):
                entries, npig = [], 0
                for g, d, ious in per_video:
                    entries.append((d, _match(d, g, ious, area_rng, occ_rng)))
                    npig += sum(not _gt_ignored(y, area_rng, occ_rng) for y in g)
                if not entries or npig == 0:
                    continue  # the category is left out of this range's means
                for m, max_det in enumerate(MAX_DETS):
                    for t in range(T):
                        precision[t, :, k, a, o, m], recall[t, k, a, o, m] = _precision_recall(
                            entries, t, max_det, npig
                        )
    return ReferenceResult(_summarize(precision, recall, with_occlusion), precision, recall, cat_ids)


def _summarize(precision: np.ndarray, recall: np.ndarray, with_occlusion: bool) -> dict[str, float]:
    """Step 7: the stats, in the official order."""
    defs = dict(_YTVIS_STATS)
    if with_occlusion:  # OVIS order: the occlusion APs after APl, the occlusion ARs at the end
        names = [*list(_YTVIS_STATS)[:6], "AP_light", "AP_medium", "AP_heavy", *list(_YTVIS_STATS)[6:]]
        names += ["AR_light", "AR_medium", "AR_heavy"]
        defs.update(_OCCLUSION_STATS)
    else:
        names = list(_YTVIS_STATS)
    occ_index = {name: i for i, name in enumerate(OCCLUSION_RANGES if with_occlusion else ["all"])}
    stats = {}
    for name in names:
        kind, iou, area, occ, max_det = defs[name]
        s = precision if kind == "AP" else recall
        if iou is not None:
            s = s[[i for i, t in enumerate(IOU_THRESHOLDS) if t == iou]]
        s = s[..., list(AREA_RANGES).index(area), occ_index[occ], MAX_DETS.index(max_det)]
        valid = s[s > -1]
        stats[name] = float(np.mean(valid)) if valid.size else -1.0
    return stats
