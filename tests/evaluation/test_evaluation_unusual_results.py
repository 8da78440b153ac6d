"""Predictions that are scored but probably wrong are named in a warning: an RLE size other than the video's
size, a NaN score. Both loading paths (serial and forked) warn the same; correct results give no warning."""

import json
import math
import warnings

import pytest
from test_evaluation_quirks import block, det, gt_dict

from vidseg.cli import main
from vidseg.evaluation import evaluate_ytvis


def _files(tmp_path, res):
    g, r = tmp_path / "gt.json", tmp_path / "res.json"
    g.write_text(json.dumps(gt_dict([{"masks": [block(), block()]}], videos=((1, 2), (2, 2)))))
    r.write_text(json.dumps(res))
    return g, r


def _warnings(g, r, workers):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_ytvis(g, r, progress=False, workers=workers)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("workers", [1, 2])  # 2 with a file path: the results are read in a forked process
def test_rle_size_other_than_the_video_size_is_named(tmp_path, workers):
    good = det([block(), block()])
    wrong = det([block(), block(h=5, w=4)], video_id=2)  # the video is 4x4
    g, r = _files(tmp_path, [good, good, wrong])
    msgs = [m for m in _warnings(g, r, workers) if "'size'" in m]
    assert msgs == [
        f"{r}: 1 entries have RLE masks whose 'size' is not their video's size (entry 2); entry 2: "
        "segmentations[1] has size [5, 4], video 2 is [4, 4]. They are scored as the official code scores "
        "them; check that the masks were pasted back at the original video size"
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_nan_scores_are_named(tmp_path, workers):
    res = [
        det([block(), block()]),
        det([block(), None], score=math.nan),
        det([None, block()], score=math.nan),
    ]
    g, r = _files(tmp_path, res)
    msgs = [m for m in _warnings(g, r, workers) if "NaN" in m]
    assert msgs == [
        f"{r}: 2 entries have a NaN 'score' (entries 1, 2); their place in the ranking is arbitrary"
    ]


def test_usual_results_give_no_warning(tmp_path):
    g, r = _files(tmp_path, [det([block(), block()]), det([block(), None], video_id=2, score=0.4)])
    assert _warnings(g, r, 1) == []


def test_score_command_prints_the_warnings_as_lines(tmp_path, capsys):
    g, r = _files(tmp_path, [det([block(), block(h=5, w=4)]), det([block(), None], score=math.nan)])
    assert main(["score", str(g), str(r), "--no-progress", "--workers", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum(ln.startswith("vidseg score: warning: ") and "entry 0" in ln for ln in err) == 1
    assert sum(ln.startswith("vidseg score: warning: ") and "NaN" in ln for ln in err) == 1
    assert not any("warnings.warn" in ln for ln in err)
