"""The frame intersections from pycocotools' C ``iou`` (one call per video, frames told apart by their
key)."""

import numpy as np
from evalcase_gen import random_case
from pycocotools import mask as mask_utils

import vidseg.evaluation.rle_c as rle_c
from vidseg.evaluation import evaluate_ytvis


def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def test_integer_intersections_are_recovered_exactly():
    rng = np.random.default_rng(0)
    h, w = 37, 53
    dms = [(rng.random((h, w)) < rng.uniform(0.05, 0.95)) for _ in range(12)]
    gms = [(rng.random((h, w)) < rng.uniform(0.05, 0.95)) for _ in range(7)]
    dkey = np.arange(12) % 3  # frames meet only within their key
    gkey = np.arange(7) % 3
    a, b, inter = rle_c.c_intersections(
        [_rle(m) for m in dms],
        [_rle(m) for m in gms],
        dkey,
        gkey,
        np.full(12, h),
        np.full(7, h),
        np.array([m.sum() for m in dms]),
        w,
    )
    got = {(int(i), int(j)): v for i, j, v in zip(a, b, inter)}
    for i in range(12):
        for j in range(7):
            want = int((dms[i] & gms[j]).sum()) if dkey[i] == gkey[j] else 0
            assert got.get((i, j), 0) == want


def test_big_areas_are_exact():
    # areas near the largest 720p/4K masks: the float ratio still gives back the integer intersection
    h, w = 2160, 3840
    full = np.ones((h, w), np.uint8)
    part = full.copy()
    part[:, 1:] = 0
    part[:1001, 1] = 1
    d = [_rle(full), _rle(part)]
    g = [_rle(part)]
    a, b, inter = rle_c.c_intersections(
        d,
        g,
        np.zeros(2, np.int64),
        np.zeros(1, np.int64),
        np.full(2, h),
        np.full(1, h),
        np.array([h * w, h + 1001]),
        w,
    )
    assert sorted(inter.tolist()) == [h + 1001, h + 1001]


def test_chunked_calls_give_the_same_result(monkeypatch):
    gt, res = random_case(11, n_videos=3, quirks=True)
    ref = evaluate_ytvis(gt, res, progress=False)
    monkeypatch.setattr(rle_c, "_MAX_CELLS", 3)  # many small C calls instead of one per video
    chunks = rle_c._key_chunks(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 2, 2]))
    assert [(d.tolist(), g.tolist()) for d, g in chunks] == [([0, 1, 2], [0]), ([3, 4, 5], [1, 2])]
    out = evaluate_ytvis(gt, res, progress=False)
    assert out.stats == ref.stats
    np.testing.assert_array_equal(out.precision, ref.precision)


def test_block_chunks_keep_videos_apart():
    chunks = rle_c._block_chunks(
        np.array([0, 1, 0, 1]), np.array([0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 1, 1])
    )
    assert [(d.tolist(), g.tolist()) for d, g in chunks] == [([0, 2], [0]), ([1, 3], [1, 2])]


def test_batched_videos_give_the_same_result(monkeypatch, tmp_path):
    import json

    import vidseg.evaluation.ytvis_eval as ytvis_eval

    gt, res = random_case(21, n_videos=6, quirks=False)  # files: the packed (batched) path
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    batched = evaluate_ytvis(gp, rp, progress=False)
    monkeypatch.setattr(ytvis_eval, "_VIDEO_BATCH", 1)
    single = evaluate_ytvis(gp, rp, progress=False)
    assert batched.stats == single.stats
    np.testing.assert_array_equal(batched.precision, single.precision)
    np.testing.assert_array_equal(batched.recall, single.recall)
