"""A deliberately straightforward re-statement of the YouTube-VIS metric (spec ytvis-eval.md §1-6), used only
by
the tests as an independent reference: bitmasks decoded with pycocotools, plain Python loops everywhere."""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

IOU_T = np.linspace(0.5, 0.95, 10)
REC_T = np.linspace(0.0, 1.0, 101)
AREAS = [(0, 1e10), (0, 128**2), (128**2, 256**2), (256**2, 1e10)]


def _bitmask(seg, video):
    if not seg:
        return None
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, video["height"], video["width"]))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, *seg["size"])
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def _video_iou(d, g):
    inter = union = 0
    for dm, gm in zip(d, g):
        if dm is not None and gm is not None:
            if dm.shape == gm.shape:
                inter += int((dm & gm).sum())
                union += int((dm | gm).sum())
        elif gm is not None:
            union += int(gm.sum())
        elif dm is not None:
            union += int(dm.sum())
    return inter / union if union > 0 else 0.0


def _avg(areas):
    vals = [a for a in areas if a]
    return float(np.array(vals).mean()) if vals else 0.0


def naive_ytvis(gt: dict, results: list) -> list[float]:
    """The 12 official stats for a GT dict and a results list."""
    videos = {v["id"]: v for v in gt["videos"]}
    cat_ids = sorted(c["id"] for c in gt["categories"])
    vid_ids = sorted(videos)
    gts = {}
    for a in gt["annotations"]:
        if a["video_id"] in videos and a["category_id"] in cat_ids:
            v = videos[a["video_id"]]
            masks = [_bitmask(s, v) for s in a["segmentations"]]
            rec = dict(id=a["id"], masks=masks, avg=_avg(a["areas"]), crowd=bool(a["iscrowd"]))
            gts.setdefault((a["video_id"], a["category_id"]), []).append(rec)
    dts = {}
    for i, r in enumerate(results):
        if r["category_id"] in cat_ids:
            masks = [_bitmask(s, None) for s in r["segmentations"]]
            areas = [int(m.sum()) if m is not None else None for m in masks]
            rec = dict(id=i + 1, masks=masks, avg=_avg(areas), score=r["score"])
            dts.setdefault((r["video_id"], r["category_id"]), []).append(rec)
    K, A, M = len(cat_ids), 4, 3
    prec = -np.ones((10, 101, K, A, M))
    rec_ = -np.ones((10, K, A, M))
    for k, c in enumerate(cat_ids):
        for a, (lo, hi) in enumerate(AREAS):
            per_video = []
            for v in vid_ids:
                g = gts.get((v, c), [])
                d = dts.get((v, c), [])
                if not g and not d:
                    continue
                d = sorted(d, key=lambda x: -x["score"])[:100]  # Python's sort is stable
                ign = [x["crowd"] or x["avg"] < lo or x["avg"] > hi for x in g]
                order = sorted(range(len(g)), key=lambda j: ign[j])
                g = [g[j] for j in order]
                ign = [ign[j] for j in order]
                ious = [[_video_iou(x["masks"], y["masks"]) for y in g] for x in d]
                res = []
                for t in IOU_T:
                    used = [False] * len(g)
                    row = []
                    for di, x in enumerate(d):
                        best, m = min(t, 1 - 1e-10), -1
                        for gi in range(len(g)):
                            if used[gi] and not g[gi]["crowd"]:
                                continue
                            if m > -1 and not ign[m] and ign[gi]:
                                break
                            if ious[di][gi] >= best:
                                best, m = ious[di][gi], gi
                        if m == -1:
                            row.append((False, x["avg"] < lo or x["avg"] > hi))
                        else:
                            used[m] = True
                            tp = g[m]["id"] != 0
                            row.append((tp, ign[m] or (not tp and (x["avg"] < lo or x["avg"] > hi))))
                    res.append(row)
                per_video.append((d, res, sum(1 for f in ign if not f)))
            if not per_video:
                continue
            npig = sum(p[2] for p in per_video)
            if npig == 0:
                continue
            for m, md in enumerate((1, 10, 100)):
                for t in range(10):
                    items = []
                    for d, res, _ in per_video:
                        for j in range(min(md, len(d))):
                            items.append((d[j]["score"], res[t][j]))
                    items.sort(key=lambda it: -it[0])
                    tp = fp = 0
                    rcs, prs = [], []
                    for _, (is_tp, is_ig) in items:
                        if is_ig:
                            pass
                        elif is_tp:
                            tp += 1
                        else:
                            fp += 1
                        rcs.append(tp / npig)
                        prs.append(tp / (fp + tp + np.spacing(1)))
                    rec_[t, k, a, m] = rcs[-1] if items else 0
                    for i in range(len(prs) - 2, -1, -1):
                        prs[i] = max(prs[i], prs[i + 1])
                    q = np.zeros(101)
                    for r, thr in enumerate(REC_T):
                        j = next((i for i, x in enumerate(rcs) if x >= thr), None)
                        if j is None:
                            break
                        q[r] = prs[j]
                    prec[t, :, k, a, m] = q

    def mean(s):
        s = s[s > -1]
        return float(np.mean(s)) if len(s) else -1.0

    return [
        mean(prec[:, :, :, 0, 2]),
        mean(prec[0, :, :, 0, 2]),
        mean(prec[5, :, :, 0, 2]),
        *[mean(prec[:, :, :, a, 2]) for a in (1, 2, 3)],
        *[mean(rec_[:, :, 0, m]) for m in (0, 1, 2)],
        *[mean(rec_[:, :, a, 2]) for a in (1, 2, 3)],
    ]


def occlusion_score(levels: list) -> float:
    """OVIS occlusion score of a GT track: mean of the most occluded half of its labelled frames."""
    s = sorted(
        {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}[x] for x in levels if x
    )
    top = s[len(s) - math.ceil(len(s) / 2) :]
    return sum(top) / len(top)
