"""Files go through the fast paths (numpy parser of GT counts lists, pre-indexed frames); dicts given in
memory go through the general frame-by-frame path. Both must give bit-identical results."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from evalcase_gen import random_case

from vidseg.evaluation import evaluate_ytvis, load_ground_truth, load_results


def _both(tmp_path, seed: int, **kw):
    gt, res = random_case(seed, **kw)
    gp, rp = tmp_path / f"gt{seed}.json", tmp_path / f"res{seed}.json"
    gp.write_text(json.dumps(gt, indent=1 if seed % 2 else None))  # both json.dump layouts
    rp.write_text(json.dumps(res))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_files = evaluate_ytvis(gp, rp, progress=False)
        in_memory = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(res), progress=False)
    return from_files, in_memory


@pytest.mark.parametrize("seed", range(10))
def test_file_and_memory_paths_identical(tmp_path, seed: int) -> None:
    a, b = _both(tmp_path, seed, n_videos=1 + seed % 5, quirks=seed % 3 != 0)
    assert a.stats == b.stats
    np.testing.assert_array_equal(a.precision, b.precision)
    np.testing.assert_array_equal(a.recall, b.recall)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 150))
def test_file_and_memory_paths_identical_many(tmp_path, seed: int) -> None:
    a, b = _both(tmp_path, seed, n_videos=1 + seed % 6, quirks=seed % 5 != 0)
    assert a.stats == b.stats
    np.testing.assert_array_equal(a.precision, b.precision)


def test_loaded_tracks_are_indexed(tmp_path) -> None:
    gt, res = random_case(3, n_videos=3, quirks=False)
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    g = load_ground_truth(gp)
    dts = load_results(rp, g)
    for tr in [t for ts in g.tracks.values() for t in ts] + dts:
        assert tr.present_t is not None  # the fast path is taken for official-format files
        assert tr.present_t.tolist() == [t for t, f in enumerate(tr.frames) if f is not None]
        assert tr.sizes.tolist() == [list(tr.frames[t]["size"]) for t in tr.present_t.tolist()]


def test_bad_prediction_string_still_names_entry_and_frame(tmp_path) -> None:
    gt, res = random_case(5, n_videos=2, quirks=False)
    r = next(r for r in res if any(r["segmentations"]))
    t = next(t for t, s in enumerate(r["segmentations"]) if s)
    r["segmentations"][t]["counts"] = "0" + chr(ord("o") + 1)
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    with pytest.raises(ValueError, match=rf"res\.json: entry {res.index(r)}: segmentations\[{t}\]"):
        evaluate_ytvis(gp, rp, progress=False)


def test_read_results_gives_tracks_best_first_and_names_bad_entries(tmp_path):
    import json

    from vidseg.evaluation.results_file import ResultsFileError, read_results

    rle = {"size": [2, 3], "counts": "06"}
    entries = [
        {"video_id": 1, "category_id": 7, "score": 0.2, "segmentations": [rle, None]},
        {"video_id": 1, "category_id": 9, "score": 0.9, "segmentations": [None, rle]},
        {"video_id": 2, "category_id": 5, "score": 0.5, "segmentations": [rle]},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    out = read_results(path, {1: (2, 3), 2: (2, 3)}, {7: 0, 9: 1})
    assert [(t.track_id, t.label, t.score) for t in out[1].tracks] == [(1, 1, 0.9), (2, 0, 0.2)]
    assert out[2].tracks[0].label == -1  # a category the dataset does not have
    assert (out[1].height, out[1].width) == (2, 3)
    with pytest.raises(ResultsFileError, match="entry 2: field 'video_id' 2 is not a known video"):
        read_results(path, {1: (2, 3)}, {})
    path.write_text('{"video_id": 1}')
    with pytest.raises(ResultsFileError, match="must be a list"):
        read_results(path, {1: (2, 3)}, {})
