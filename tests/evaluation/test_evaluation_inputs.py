"""Bad input gives clear errors naming the file, the entry index and the field; recoverable problems warn."""

import json

import pytest
from test_evaluation_quirks import block, det, gt_dict

from vidseg.evaluation import EvalInputError, evaluate_ytvis


def _files(tmp_path, gt, res):
    g, r = tmp_path / "gt.json", tmp_path / "res.json"
    g.write_text(json.dumps(gt))
    r.write_text(json.dumps(res))
    return g, r


def test_prediction_for_unknown_video(tmp_path):
    g, r = _files(tmp_path, gt_dict([{"masks": [block()]}]), [det([block()]), det([block()], video_id=7)])
    with pytest.raises(EvalInputError, match=r"res.json: entry 1: field 'video_id' = 7 is not a video"):
        evaluate_ytvis(g, r, progress=False)


def test_malformed_rle_names_entry_and_frame(tmp_path):
    bad = det([block(), block()])
    bad["segmentations"][1]["counts"] = "0P"
    g, r = _files(
        tmp_path, gt_dict([{"masks": [block(), block()]}], videos=((1, 2),)), [det([block()] * 2), bad]
    )
    with pytest.raises(
        EvalInputError, match=r"res.json: entry 1: segmentations\[1\]: compressed RLE ends inside"
    ):
        evaluate_ytvis(g, r, progress=False)
    bad["segmentations"][1] = {"size": [4, 5], "counts": bad["segmentations"][0]["counts"]}
    g, r = _files(tmp_path, gt_dict([{"masks": [block(), block()]}], videos=((1, 2),)), [bad])
    with pytest.raises(EvalInputError, match=r"entry 0: segmentations\[1\]: RLE counts add up to 16 pixels"):
        evaluate_ytvis(g, r, progress=False)


@pytest.mark.parametrize("field", ["video_id", "category_id", "score", "segmentations"])
def test_missing_result_field(tmp_path, field):
    d = det([block()])
    del d[field]
    g, r = _files(tmp_path, gt_dict([{"masks": [block()]}]), [det([block()]), d])
    with pytest.raises(EvalInputError, match=rf"entry 1: missing required field '{field}'"):
        evaluate_ytvis(g, r, progress=False)


@pytest.mark.parametrize("field", ["areas", "iscrowd", "segmentations"])
def test_missing_gt_field(tmp_path, field):
    gt = gt_dict([{"masks": [block()]}, {"masks": [block()]}])
    del gt["annotations"][1][field]
    g, r = _files(tmp_path, gt, [det([block()])])
    with pytest.raises(EvalInputError, match=rf"gt.json: annotations\[1\]: missing required field '{field}'"):
        evaluate_ytvis(g, r, progress=False)


def test_uncompressed_result_rle_and_bad_files(tmp_path):
    d = det([block()])
    d["segmentations"][0]["counts"] = [0, 16]
    g, r = _files(tmp_path, gt_dict([{"masks": [block()]}]), [d])
    with pytest.raises(
        EvalInputError, match=r"entry 0: segmentations\[0\]: field 'counts' must be a compressed"
    ):
        evaluate_ytvis(g, r, progress=False)
    r.write_text("[{")
    with pytest.raises(EvalInputError, match="res.json: not valid JSON"):
        evaluate_ytvis(g, r, progress=False)
    with pytest.raises(FileNotFoundError, match="missing.json: no such file"):
        evaluate_ytvis(tmp_path / "missing.json", r, progress=False)


def test_frame_list_length_warning_counts_entries(tmp_path):
    gt = gt_dict([{"masks": [block()] * 3}])
    res = [det([block()]), det([block()] * 3), det([block()] * 4)]
    with pytest.warns(UserWarning, match="2 result entries have a frame list whose length differs"):
        r = evaluate_ytvis(gt, res, progress=False)
    assert r.stats["AR1"] == 1.0  # still scored: the 1-frame prediction is perfect on the common prefix


def test_unknown_category_and_duplicate_gt_ids_warn():
    gt = gt_dict([{"masks": [block()], "id": 5}, {"masks": [block(x0=2, x1=4)], "id": 5}], videos=((1, 1),))
    with pytest.warns(UserWarning) as rec:
        r = evaluate_ytvis(gt, [det([block(x0=2, x1=4)]), det([block()], category_id=99)], progress=False)
    messages = " ".join(str(w.message) for w in rec)
    assert "repeat an earlier 'id'" in messages and "not a GT category" in messages
    # the official index keeps the last annotation of id 5 twice: one match, one missed GT -> recall 1/2
    assert r.stats["AR100"] == 0.5
