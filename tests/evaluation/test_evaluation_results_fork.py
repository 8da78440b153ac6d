"""results_fork: the results file parsed in a forked child gives exactly what load_results gives."""

from __future__ import annotations

import json
import os
import signal
import time
import warnings

import numpy as np
import pytest
from evalcase_gen import encode, random_case
from pycocotools import mask as mask_utils

from vidseg.evaluation import results_fork
from vidseg.evaluation.results_fork import start_results_load
from vidseg.evaluation.ytvis_data import EvalInputError, load_ground_truth, load_results

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _write(tmp_path, gt: dict, res) -> tuple[str, str]:
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(res if isinstance(res, str) else json.dumps(res))
    return str(gp), str(rp)


def _both(gt_path: str, res_path: str, **kw):
    """(forked result, fork warnings, the load object, serial result, serial warnings)."""
    gt = load_ground_truth(gt_path)
    with start_results_load(res_path, **kw) as load:
        with warnings.catch_warnings(record=True) as w_fork:
            warnings.simplefilter("always")
            got = load.get(gt)
    with warnings.catch_warnings(record=True) as w_ser:
        warnings.simplefilter("always")
        ref = load_results(res_path, gt, source=kw.get("source"))
    return got, [str(x.message) for x in w_fork], load, ref, [str(x.message) for x in w_ser]


def _assert_same(got: list, ref: list) -> None:
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert (a.index, a.video_id, a.category_id, a.score, a.source) == (
            b.index,
            b.video_id,
            b.category_id,
            b.score,
            b.source,
        )
        assert type(a.video_id) is type(b.video_id) and type(a.score) is float
        assert a.frames == b.frames and a.given == b.given
        assert all(f is None or type(f["counts"]) is str for f in a.frames)
        assert a.present_t.dtype == np.int64 and np.array_equal(a.present_t, b.present_t)
        assert a.sizes.dtype == np.int64 and a.sizes.shape == b.sizes.shape
        assert np.array_equal(a.sizes, b.sizes)
        # frames and given share the dicts, as in load_results
        assert all(a.frames[t] is g for t, g in zip(a.present_t.tolist(), a.given))
        # one form of areas: int64 [F]; load_results measures none (-1), the fork measures or leaves -1
        for tr in (a, b):
            assert tr.areas.dtype == np.int64 and tr.areas.shape == tr.present_t.shape
        assert (b.areas == -1).all()


def _assert_areas(tracks: list) -> None:
    for tr in tracks:
        assert tr.areas.dtype == np.int64
        expected = [int(mask_utils.area(g)) for g in tr.given]
        assert tr.areas.tolist() == expected


@pytest.mark.parametrize("batch", [2048, 3])  # 3: the strings are written in many batches
def test_random_cases_equal_load_results_and_areas(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(results_fork, "_WRITE_BATCH", batch)
    for seed in range(3):
        gt, res = random_case(seed, n_videos=6)
        res.append({"video_id": gt["videos"][0]["id"], "category_id": 99, "score": 0.3, "segmentations": []})
        gp, rp = _write(tmp_path, gt, res)
        got, w_fork, load, ref, w_ser = _both(gp, rp)
        assert load.fallback_reason is None, load.fallback_reason
        assert {"child", "rebuild"} <= set(load.timings)
        _assert_same(got, ref)
        _assert_areas(got)
        assert w_fork == w_ser and any("not a GT category" in m for m in w_fork)


def _small_gt() -> dict:
    return {
        "videos": [
            {"id": "v1", "height": 4, "width": 5, "length": 3},
            {"id": "v2", "height": 4, "width": 5, "length": 2},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [],
    }


def _mask(seed: int) -> dict:
    return encode(np.random.default_rng(seed).random((4, 5)) < 0.5)


def test_string_ids_nulls_empty_lists_and_warnings(tmp_path):
    res = [
        {"video_id": "v1", "category_id": 1, "score": 1, "segmentations": [_mask(0), None, _mask(1)]},
        {"video_id": "v2", "category_id": 2, "score": 0.5, "segmentations": []},
        {"video_id": "v1", "category_id": 7, "score": 0.4, "segmentations": [None] * 3},  # unknown cat
        {"video_id": "v2", "category_id": 1, "score": 0.2, "segmentations": [_mask(2)]},  # length 1 != 2
        {"video_id": "v1", "category_id": 2, "score": 0.1, "segmentations": [None, {}, _mask(3)]},
    ]
    gp, rp = _write(tmp_path, _small_gt(), res)
    got, w_fork, load, ref, w_ser = _both(gp, rp, source="preds")
    assert load.fallback_reason is None
    _assert_same(got, ref)
    _assert_areas(got)
    assert [t.index for t in got] == [0, 1, 3, 4] and got[0].source == "preds"
    assert got[1].present_t.shape == (0,) and got[1].sizes.shape == (0, 2) and got[1].areas.shape == (0,)
    assert w_fork == w_ser and len(w_fork) == 2
    assert "1 entries have a category_id" in w_fork[0] and "2 result entries" in w_fork[1]


@pytest.mark.parametrize("batch", [2048, 1, 2])  # strings written one batch at a time: batch edges
def test_malformed_string_areas_unmeasured_for_that_entry_only(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(results_fork, "_WRITE_BATCH", batch)
    bad = dict(_mask(0), counts="0~1")  # '~' is outside the RLE alphabet
    unfinished = dict(_mask(1), counts=_mask(1)["counts"] + "P")  # ends inside a number (bit 0x20)
    non_ascii = dict(_mask(2), counts="1é")
    res = [
        {"video_id": "v1", "category_id": 1, "score": 0.9, "segmentations": [_mask(3), bad, _mask(4)]},
        {"video_id": "v1", "category_id": 1, "score": 0.8, "segmentations": [_mask(5), None, _mask(6)]},
        {"video_id": "v2", "category_id": 2, "score": 0.7, "segmentations": [unfinished, _mask(7)]},
        {"video_id": "v2", "category_id": 2, "score": 0.6, "segmentations": [non_ascii, None]},
    ]
    gp, rp = _write(tmp_path, _small_gt(), res)
    got, _, load, ref, _ = _both(gp, rp)
    assert load.fallback_reason is None
    _assert_same(got, ref)
    assert [got[i].areas.tolist() for i in (0, 2, 3)] == [[-1, -1, -1], [-1, -1], [-1]]
    assert got[3].given[0]["counts"] == "1é"
    _assert_areas([got[1]])


def test_unknown_video_same_error(tmp_path):
    res = [
        {"video_id": "v1", "category_id": 1, "score": 0.9, "segmentations": [_mask(0)]},
        {"video_id": "v9", "category_id": 1, "score": 0.9, "segmentations": [_mask(1)]},
    ]
    gp, rp = _write(tmp_path, _small_gt(), res)
    gt = load_ground_truth(gp)
    with pytest.raises(EvalInputError) as serial:
        load_results(rp, gt)
    load = start_results_load(rp)
    with pytest.raises(EvalInputError) as forked:
        load.get(gt)
    assert str(forked.value) == str(serial.value) and "entry 1" in str(forked.value)
    assert load.fallback_reason == "a video not in the GT"


_UNCOMPRESSED = {"size": [4, 5], "counts": [20]}


@pytest.mark.parametrize(
    "text",
    [
        '[{"video_id": "v1", ',  # corrupt JSON
        "{}",  # not a list
        "[]",  # empty list (warning)
        '[{"video_id": "v1", "category_id": 1, "score": true, "segmentations": []}]',
        json.dumps([{"video_id": "v1", "category_id": 1, "score": 1, "segmentations": [_UNCOMPRESSED]}]),
        '[{"video_id": "v1", "category_id": 1, "score": 1, "segmentations": [{"size": [4, 5]}]}]',
    ],
)
def test_unusual_files_fall_back_with_same_outcome(tmp_path, text):
    gp, rp = _write(tmp_path, _small_gt(), text)
    gt = load_ground_truth(gp)
    outcomes = []
    for fn in (lambda: load_results(rp, gt), lambda: start_results_load(rp).get(gt)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                out = ("ok", [(t.index, t.frames) for t in fn()])
            except (EvalInputError, FileNotFoundError) as e:
                out = (type(e).__name__, str(e))
        outcomes.append((out, [str(x.message) for x in w]))
    assert outcomes[0] == outcomes[1]


def test_missing_file(tmp_path):
    gp, _ = _write(tmp_path, _small_gt(), "[]")
    gt = load_ground_truth(gp)
    load = start_results_load(tmp_path / "nope.json")
    assert load.pid is None
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        load.get(gt)


def _case_files(tmp_path, seed: int) -> tuple[str, object]:
    """A random case written to files: (results path, loaded GT)."""
    gt, res = random_case(seed, n_videos=4)
    gp, rp = _write(tmp_path, gt, res)
    return rp, load_ground_truth(gp)


def _slow_child(monkeypatch) -> None:
    """Children forked from now on sleep before working (a fork sees the patched module)."""
    work = results_fork._child_work

    def slow(*args):
        time.sleep(60)
        return work(*args)

    monkeypatch.setattr(results_fork, "_child_work", slow)


@pytest.mark.filterwarnings("ignore:.*frame list whose length")
def test_killed_child_falls_back(tmp_path, monkeypatch):
    _slow_child(monkeypatch)
    rp, gtl = _case_files(tmp_path, 5)
    load = start_results_load(rp)
    os.kill(load.pid, signal.SIGKILL)
    got = load.get(gtl)
    assert load.fallback_reason == "child ended without a message"
    _assert_same(got, load_results(rp, gtl))
    assert load.pid is None
    load.close()  # idempotent


@pytest.mark.filterwarnings("ignore:.*frame list whose length")
def test_slow_child_is_killed_and_close_reaps(tmp_path, monkeypatch):
    _slow_child(monkeypatch)
    rp, gtl = _case_files(tmp_path, 6)
    load = start_results_load(rp, timeout=1.0)
    got = load.get(gtl)
    assert "took more than" in load.fallback_reason
    _assert_same(got, load_results(rp, gtl))
    unread = start_results_load(rp)
    pid = unread.pid
    unread.close()
    unread.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped


@pytest.mark.filterwarnings("ignore:.*frame list whose length")
def test_without_memfd_and_without_fork(tmp_path, monkeypatch):
    rp, gtl = _case_files(tmp_path, 7)
    ref = load_results(rp, gtl)
    monkeypatch.delattr(os, "memfd_create", raising=False)  # a temporary file carries the data instead
    load = start_results_load(rp)
    _assert_same(load.get(gtl), ref)
    assert load.fallback_reason is None
    monkeypatch.delattr(os, "fork")
    load = start_results_load(rp)
    assert load.pid is None and load.fallback_reason == "fork is not available"
    _assert_same(load.get(gtl), ref)
