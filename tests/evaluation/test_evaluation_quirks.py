"""Hand-computed cases for each quirk of the official YouTube-VIS metric (spec ytvis-eval.md §8)."""

import warnings

import numpy as np
import pytest
from evalcase_gen import encode, uncompressed

from vidseg.evaluation import evaluate_ytvis

ONE = 1 / (1 + np.spacing(1))  # precision of a single true positive: tp / (tp + fp + eps)


def block(h=4, w=4, y0=0, x0=0, y1=2, x1=2):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def gt_dict(anns, videos=((1, 3),), n_cats=2):
    out_anns = []
    for i, a in enumerate(anns):
        masks = a["masks"]
        areas = a.get("areas", [int(m.sum()) if m is not None else None for m in masks])
        out_anns.append(
            {
                "id": a.get("id", i + 1),
                "video_id": a.get("video_id", 1),
                "category_id": a.get("category_id", 1),
                "iscrowd": a.get("iscrowd", 0),
                "segmentations": [uncompressed(m) if m is not None else None for m in masks],
                "areas": areas,
            }
        )
    return {
        "videos": [{"id": v, "height": 4, "width": 4, "length": n} for v, n in videos],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)],
        "annotations": out_anns,
    }


def det(masks, score=0.9, category_id=1, video_id=1):
    segs = [encode(m) if m is not None else None for m in masks]
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": segs}


def run(gt, res, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_ytvis(gt, res, progress=False, **kw)


def test_zip_truncation_compares_only_the_common_prefix():
    g = gt_dict([{"masks": [block(), block(), block()]}])
    short = run(g, [det([block()])])  # one perfect frame of a 3-frame track: IoU 1
    assert short.stats["AP"] == pytest.approx(ONE, abs=1e-15) and short.stats["AR1"] == 1.0
    padded = run(g, [det([block(), None, None])])  # absent frames add the GT area to the union: IoU 1/3
    assert padded.stats["AP"] == 0.0 and padded.stats["AR100"] == 0.0


def test_iou_equal_to_threshold_matches():
    g = gt_dict([{"masks": [block()]}], videos=((1, 1),))
    three_of_four = block()
    three_of_four[1, 1] = 0  # I = 3, U = 4: IoU 0.75 matches thresholds .50 ... .75
    r = run(g, [det([three_of_four])])
    assert r.stats["AP50"] == pytest.approx(ONE, abs=1e-15) and r.stats["AP75"] == pytest.approx(
        ONE, abs=1e-15
    )
    assert r.stats["AP"] == pytest.approx(0.6 * ONE, abs=1e-15)
    assert r.stats["AR100"] == pytest.approx(0.6, abs=1e-15)


def test_frames_of_different_size_add_nothing():
    g = gt_dict([{"masks": [block(), block()]}], videos=((1, 2),))
    other_size = block(h=5)
    assert run(g, [det([block(), other_size])]).stats["AP"] == pytest.approx(
        ONE, abs=1e-15
    )  # frame 1 adds 0 to I and U: IoU 1
    assert run(g, [det([block(), None])]).stats["AP"] == pytest.approx(
        0.1 * ONE, abs=1e-15
    )  # IoU 4/8: only .50


def test_gt_id_zero_counts_as_false_positive():
    g = gt_dict([{"masks": [block()], "id": 0}], videos=((1, 1),))
    r = run(g, [det([block()])])
    assert r.stats["AP"] == 0.0 and r.stats["AR100"] == 0.0


def test_areas_field_decides_the_size_range_and_bounds_are_inclusive():
    g = gt_dict([{"masks": [block(), block(), None], "areas": [0, 20000, None]}])  # zero area not averaged
    r = run(g, [det([block(), block(), None])])
    assert r.stats["APm"] == pytest.approx(ONE, abs=1e-15) and r.stats["APs"] == -1 and r.stats["APl"] == -1
    g = gt_dict([{"masks": [block()], "areas": [16384]}], videos=((1, 1),))  # exactly 128^2: small and medium
    r = run(g, [det([block()])])
    assert (
        r.stats["APs"] == pytest.approx(ONE, abs=1e-15)
        and r.stats["APm"] == pytest.approx(ONE, abs=1e-15)
        and r.stats["APl"] == -1
    )


def test_equal_scores_keep_results_file_order():
    g = gt_dict([{"masks": [block()]}, {"masks": [block(x0=2, x1=4)]}], videos=((1, 1),))
    miss = block(y0=2, y1=4)
    fp_first = run(g, [det([miss], 0.5), det([block()], 0.5)]).stats["AP"]
    tp_first = run(g, [det([block()], 0.5), det([miss], 0.5)]).stats["AP"]
    assert fp_first == pytest.approx(51 * 0.5 / 101, abs=1e-12)  # precision 1/2 up to recall 1/2
    assert tp_first == pytest.approx(51 * ONE / 101, abs=1e-12)


def test_crowd_gt_absorbs_detections():
    everything = np.ones((4, 4), np.uint8)
    anns = [{"masks": [everything], "iscrowd": 1}, {"masks": [block()]}]
    g = gt_dict(anns, videos=((1, 1),))
    res = [det([everything], 0.9), det([everything], 0.8), det([block()], 0.5)]
    assert run(g, res).stats["AP"] == pytest.approx(
        ONE, abs=1e-15
    )  # the crowd matches are ignored, not false positives
    anns[0]["iscrowd"] = 0
    # as regular GT: TP, FP, TP -> precision 1 up to recall 1/2, then 2/3
    expected = (51 * ONE + 50 * 2 / (3 + np.spacing(1))) / 101
    assert run(gt_dict(anns, videos=((1, 1),)), res).stats["AP"] == pytest.approx(expected, abs=1e-12)


def test_category_without_gt_is_left_out():
    g = gt_dict([{"masks": [block()]}], videos=((1, 1),))
    r = run(g, [det([block()]), det([block()], 0.95, category_id=2)])
    assert r.stats["AP"] == pytest.approx(ONE, abs=1e-15)
    assert r.per_category_ap[1] == pytest.approx(ONE, abs=1e-15) and r.per_category_ap[2] == -1.0


def test_empty_results_score_zero_with_a_warning():
    g = gt_dict([{"masks": [block()]}], videos=((1, 1),))
    with pytest.warns(UserWarning, match="empty"):
        r = evaluate_ytvis(g, [], progress=False)
    assert r.stats["AP"] == 0.0 and r.stats["AR1"] == 0.0 and r.stats["APl"] == -1.0


def test_max_dets_is_per_video_and_category():
    g = gt_dict([{"masks": [block()]}, {"masks": [block(x0=2, x1=4)]}], videos=((1, 1),))
    r = run(g, [det([block()], 0.9), det([block(x0=2, x1=4)], 0.8)])
    assert r.stats["AR1"] == 0.5 and r.stats["AR10"] == 1.0


def test_detection_without_foreground_is_small():
    g = gt_dict([{"masks": [block()], "areas": [70000]}], videos=((1, 1),))  # a large GT
    empty = np.zeros((4, 4), np.uint8)
    r = run(g, [det([empty], 0.99), det([block()], 0.5)])
    assert r.stats["APl"] == pytest.approx(
        ONE, abs=1e-15
    )  # the empty detection (avg area 0) is outside "large": ignored there
    assert r.stats["AP"] == pytest.approx(0.5 * ONE, abs=1e-15)  # but a false positive for "all"
