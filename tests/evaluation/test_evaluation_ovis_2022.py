"""OVIS occlusion ranges by hand, the OVIS length rule, and the YouTube-VIS 2022 short/long protocol."""

import numpy as np
import pytest
from evalcase_gen import encode
from test_evaluation_quirks import ONE, block, det, gt_dict

from vidseg.evaluation import EvalInputError, evaluate_ytvis, evaluate_ytvis2022


def _ovis_gt():
    # track 1: labels no, slight, severe -> top ceil(3/2)=2 scores (0.25, 0.75) -> 0.5: medium AND heavy
    # (inclusive)
    # track 2: no, None, slight -> top ceil(2/2)=1 score (0.25) -> 0.25: light AND medium
    g = gt_dict([{"masks": [block()] * 3}, {"masks": [block(x0=2, x1=4)] * 3}])
    g["annotations"][0]["occlusion"] = ["no_occlusion", "slight_occlusion", "severe_occlusion"]
    g["annotations"][1]["occlusion"] = ["no_occlusion", None, "slight_occlusion"]
    return g


def test_ovis_occlusion_ranges_by_hand():
    g = _ovis_gt()
    r = evaluate_ytvis(g, [det([block()] * 3)], ovis=True, progress=False)  # finds track 1 only
    assert r.stats["AP_heavy"] == pytest.approx(ONE, abs=1e-15)
    assert r.stats["AP_medium"] == pytest.approx(51 * ONE / 101, abs=1e-15)  # one of its two GT found
    assert r.stats["AP_light"] == 0.0 and r.stats["AR_light"] == 0.0
    assert r.stats["AR100"] == 0.5


def test_ovis_requires_equal_lengths_and_labels():
    g = _ovis_gt()
    with pytest.raises(
        EvalInputError, match=r"entry 0: field 'segmentations' has 2 frames.*annotations\[0\]"
    ):
        evaluate_ytvis(g, [det([block()] * 2)], ovis=True, progress=False)
    del g["annotations"][1]["occlusion"]
    with pytest.raises(EvalInputError, match=r"annotations\[1\]: missing field 'occlusion'"):
        evaluate_ytvis(g, [det([block()] * 3)], ovis=True, progress=False)
    for a in g["annotations"]:
        a.pop("occlusion", None)
    with pytest.warns(UserWarning, match="no occlusion labels"):
        r = evaluate_ytvis(g, [det([block()] * 3)], ovis=True, progress=False)
    assert len(r.stats) == 12


def test_ytvis2022_scores_short_and_long_separately():
    full = gt_dict(
        [{"masks": [block()] * 2}, {"masks": [block()] * 4, "video_id": 2}], videos=((1, 2), (2, 4))
    )
    short = dict(full, videos=full["videos"][:1], annotations=full["annotations"][:1])
    long_ = dict(full, videos=full["videos"][1:], annotations=full["annotations"][1:])
    res = [det([block()] * 2), det([block(), block(), None, None], video_id=2)]  # long: IoU 0.5
    out = evaluate_ytvis2022(full, short, long_, res, progress=False)
    assert out["short"].stats["AP"] == pytest.approx(ONE, abs=1e-15)
    assert out["long"].stats["AP"] == pytest.approx(0.1 * ONE, abs=1e-15)
    assert out["mAP"] == pytest.approx((ONE + 0.1 * ONE) / 2, abs=1e-15)
    with pytest.raises(EvalInputError, match="entry 0: field 'video_id' = 9"):
        evaluate_ytvis2022(full, short, long_, [det([block()], video_id=9)], progress=False)


def test_polygon_and_compressed_gt_frames():
    g = gt_dict([{"masks": [block(), block()]}], videos=((1, 2),))
    g["annotations"][0]["segmentations"] = [[[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0]], encode(block())]
    from pycocotools import mask as mask_utils

    poly = mask_utils.decode(mask_utils.frPyObjects([[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0]], 4, 4))[..., 0]
    r = evaluate_ytvis(g, [det([poly.astype(np.uint8), block()])], progress=False)
    assert r.stats["AP"] == pytest.approx(ONE, abs=1e-15)
