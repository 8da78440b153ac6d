"""Prediction frames kept in a shared buffer (blob_frames): list behaviour, pickling, and the metric reading
the strings straight from the buffer (same numbers and the same errors as the serial path)."""

import copy
import json
import os
import pickle
import warnings

import numpy as np
import pytest
from evalcase_gen import encode, random_case

from vidseg.evaluation import EvalInputError, evaluate_ytvis
from vidseg.evaluation.blob_frames import BlobTrack, LazyFrames, LazyGiven, shared_blob
from vidseg.evaluation.results_fork import start_results_load
from vidseg.evaluation.ytvis_data import load_ground_truth, load_results


def _track(buf: bytes, strings: list[str], present_t: list[int], length: int, offset: int = 0) -> BlobTrack:
    lens = np.array([len(s) for s in strings], dtype=np.int64)
    ends = np.cumsum(lens) + offset
    sizes = np.array([[3, 4]] * len(strings), dtype=np.int64).reshape(-1, 2)
    return BlobTrack(buf, ends - lens, ends, sizes, np.array(present_t, dtype=np.int64), length)


def test_lazy_lists_behave_like_the_lists():
    strings = ["12", "345", "6"]
    buf = b"xx" + "".join(strings).encode()
    tr = _track(buf, strings, [0, 2, 3], 5, offset=2)
    given, frames = LazyGiven(tr), LazyFrames(tr)
    expected_given = [{"size": [3, 4], "counts": s} for s in strings]
    expected_frames = [expected_given[0], None, expected_given[1], expected_given[2], None]
    assert len(given) == 3 and len(frames) == 5
    assert given == expected_given and expected_given == given
    assert frames == expected_frames and frames != expected_frames[:4]
    assert frames[2] is given[1]  # the same dicts, as load_results shares them
    assert list(given) == expected_given and given[-1]["counts"] == "6"
    assert tr.counts_at([1, 0]) == [b"345", b"12"]
    copied = pickle.loads(pickle.dumps(tr))  # the buffer may be an mmap: only this track's bytes are kept
    assert LazyGiven(copied) == expected_given and LazyFrames(copied) == expected_frames
    with pytest.raises(TypeError):
        hash(given)


def test_shared_blob_only_for_one_buffer():
    buf = b"12345"
    a, b = _track(buf, ["12"], [0], 1), _track(buf, ["345"], [0], 1, offset=2)
    got = shared_blob([LazyGiven(a), LazyGiven(b)])
    assert got is not None and got[0] is buf
    assert got[1].tolist() == [0, 2] and got[2].tolist() == [2, 5]
    assert shared_blob([LazyGiven(a), LazyGiven(_track(b"12", ["12"], [0], 1))]) is None
    assert shared_blob([LazyGiven(a), [{"size": [1, 1], "counts": "1"}]]) is None
    assert shared_blob([]) is None


def _files(tmp_path, gt, res):
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    return str(gp), str(rp)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("seed", range(3))
def test_metric_on_buffer_tracks_equals_serial(tmp_path, seed):
    gt, res = random_case(seed + 900, n_videos=5, quirks=True)
    gp, rp = _files(tmp_path, gt, res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = load_ground_truth(gp)
        with start_results_load(rp) as load:
            dts = load.get(g)
        assert load.fallback_reason is None
        assert any(type(d.given) is LazyGiven for d in dts)
        ours = evaluate_ytvis(g, dts, progress=False, workers=1)
        ref = evaluate_ytvis(load_ground_truth(gp), load_results(rp, g), progress=False, workers=1)
    np.testing.assert_array_equal(ours.precision, ref.precision)
    assert ours.stats == ref.stats


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_bad_string_in_buffer_same_error_as_serial(tmp_path):
    gt, res = random_case(5, n_videos=3, quirks=False)
    entry = next(i for i, r in enumerate(res) if sum(1 for s in r["segmentations"] if s) >= 1)
    t = next(t for t, s in enumerate(res[entry]["segmentations"]) if s)
    m = res[entry]["segmentations"][t]
    for counts in ("0~1", m["counts"] + "P"):  # a character outside the alphabet; ends inside a number
        bad = copy.deepcopy(res)
        bad[entry]["segmentations"][t] = dict(m, counts=counts)
        gp, rp = _files(tmp_path, gt, bad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(EvalInputError) as serial:
                evaluate_ytvis(gp, rp, progress=False, workers=1)
            with pytest.raises(EvalInputError) as forked:
                evaluate_ytvis(gp, rp, progress=False, workers=2)
        assert str(forked.value) == str(serial.value)
        assert f"entry {entry}: segmentations[{t}]" in str(forked.value)


def test_check_compressed_accepts_bytes():
    from vidseg.evaluation.rle_runs import RLEError, check_compressed

    m = np.zeros((5, 6), dtype=np.uint8)
    m[1:3, 2:5] = 1
    s = encode(m)["counts"]
    area_str = check_compressed([s, s], np.array([30, 30]))
    area_bytes = check_compressed([s.encode(), s.encode()], np.array([30, 30]))
    assert area_str.tolist() == area_bytes.tolist() == [6, 6]
    with pytest.raises(RLEError, match="add up to"):
        check_compressed([s.encode()], np.array([31]))
