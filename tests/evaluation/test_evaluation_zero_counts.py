"""RLEs with a count of 0 inside: vidseg follows the official code (pycocotools' C walk), not the exact
overlap.

pycocotools never writes such counts, but hand-made or third-party RLEs can hold them. The C loop that
``merge`` (official ``iou_seq``) and ``iou`` share stops when both masks reach a count of 0 at the same pixel,
so the official intersection and union only cover the pixels before it. The expected numbers below were
produced by the official youtubevos/cocoapi ``ytvoseval.py`` (with pycocotools 2.0.11) on this exact input.
"""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vidseg.evaluation import evaluate_ytvis
from vidseg.evaluation.reference import reference_ytvis
from vidseg.evaluation.video_iou import decode_tracks, pair_ious

H, W = 2, 5  # 10 pixels, column-major


def _compressed(counts: list[int]) -> dict:
    rle = mask_utils.frPyObjects({"size": [H, W], "counts": counts}, H, W)
    return {"size": [H, W], "counts": rle["counts"].decode()}


# GT frame 0: foreground [2, 5) + a background run of 0 + foreground [5, 7), i.e. pixels 2..6.
GT_FRAMES = [[2, 3, 0, 2, 3], [0, 4, 6]]
# det 0 (score .95): frame 0 empty but written [5, 0, 5] (a 0 at pixel 5, as the GT): the walk stops at
#   pixel 5, official union 3 instead of 5 -> IoU (0 + 4) / (3 + 4) = 4/7 (exact: 4/9).
# det 1 (.9): frame 0 pixels 2..9 with a 0 at pixel 5 -> official I = U = 3 -> IoU 7/7 = 1 (exact: 9/12).
# det 2 (.8): frame 0 pixels 2..9, canonical -> the walk goes on -> IoU (5 + 4) / (8 + 4) = .75 (both).
DT_FRAMES = [[[5, 0, 5], [0, 4, 6]], [[2, 3, 0, 5], [0, 4, 6]], [[2, 8], [0, 4, 6]]]
SCORES = [0.95, 0.9, 0.8]
OFFICIAL_IOUS = [4 / 7, 1.0, 0.75]
OFFICIAL_STATS = [0.6, 0.9999999999999999, 0.5, 0.6, -1.0, -1.0, 0.2, 1.0, 1.0, 1.0, -1.0, -1.0]


def _case(gt_compressed: bool) -> tuple[dict, list]:
    segs = [_compressed(c) if gt_compressed else {"size": [H, W], "counts": c} for c in GT_FRAMES]
    gt = {
        "videos": [{"id": 1, "height": H, "width": W, "length": 2}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "areas": [5, 4], "segmentations": segs}
        ],
    }
    res = [
        {"video_id": 1, "category_id": 1, "score": s, "segmentations": [_compressed(c) for c in frames]}
        for s, frames in zip(SCORES, DT_FRAMES)
    ]
    return gt, res


@pytest.mark.parametrize("gt_compressed", [False, True])
def test_zero_counts_inside_score_as_the_official_code(gt_compressed):
    gt, res = _case(gt_compressed)
    out = evaluate_ytvis(gt, res, progress=False)
    assert list(out.stats.values()) == OFFICIAL_STATS
    # the reference uses merge, the official per-frame operation, so it gives these numbers too
    assert list(reference_ytvis(gt, res).stats.values()) == OFFICIAL_STATS


def test_zero_counts_inside_pair_ious():
    gt, res = _case(False)

    def err(n, t, reason):
        return ValueError(reason)

    dm = decode_tracks([r["segmentations"] for r in res], err, find_zero_counts=False)
    gm = decode_tracks([a["segmentations"] for a in gt["annotations"]], err)
    assert gm.zero_inside.tolist() == [True, False]
    pd, pg = np.arange(3), np.zeros(3, dtype=np.int64)
    ious = pair_ious(dm, gm, pd, pg, np.zeros(3, dtype=np.int64), np.zeros(1, dtype=np.int64))
    assert ious.tolist() == OFFICIAL_IOUS
    # the official per-frame values come from pycocotools' merge itself
    d = res[1]["segmentations"][0]
    g = _compressed(GT_FRAMES[0])
    assert (
        mask_utils.area(mask_utils.merge([d, g], True))
        == mask_utils.area(mask_utils.merge([d, g], False))
        == 3
    )
