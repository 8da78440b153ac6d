"""Randomized cases (all quirks mixed): the fast metric against the readable reference statement of it,
vidseg.evaluation.reference, on every stat and on the full precision and recall arrays."""

import copy
import json
import warnings

import numpy as np
import pytest
from evalcase_gen import random_case

from vidseg.evaluation import OVIS_STATS, YTVIS_STATS, evaluate_ytvis
from vidseg.evaluation.reference import occlusion_score, reference_ytvis


def _fast(gt, res, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(res), progress=False, **kw)


def _same(ours, ref, names):
    assert list(ours.stats) == list(ref.stats) == list(names)
    np.testing.assert_allclose(
        [ours.stats[k] for k in names], [ref.stats[k] for k in names], rtol=0, atol=1e-12
    )
    assert ours.precision.shape == ref.precision.shape and ours.recall.shape == ref.recall.shape
    np.testing.assert_array_equal(ours.precision, ref.precision)  # bit for bit: same operations, same order
    np.testing.assert_array_equal(ours.recall, ref.recall)


def _check(seed, **kw):
    gt, res = random_case(seed, **kw)
    before = copy.deepcopy((gt, res))
    ref = reference_ytvis(gt, res)
    assert (gt, res) == before  # the reference reads its inputs only
    _same(_fast(gt, res), ref, YTVIS_STATS)


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_reference(seed):
    _check(seed, n_videos=1 + seed % 5, quirks=seed % 4 != 0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12, 200))
def test_many_random_cases_match_reference(seed):
    _check(seed, n_videos=1 + seed % 6, quirks=seed % 5 != 0)


@pytest.mark.parametrize("seed", range(4))
def test_ovis_random_cases(seed):
    """OVIS with occlusion labels: all 18 stats and the arrays with their occlusion axis match the
    reference; the stats at occlusion "all" equal the YouTube-VIS ones; a case where every GT is in one
    occlusion range has that range's AP equal to AP."""
    gt, res = random_case(seed + 100, n_videos=3, ovis=True)
    ours = _fast(gt, res, ovis=True)
    _same(ours, reference_ytvis(gt, res, ovis=True), OVIS_STATS)
    plain = reference_ytvis(gt, res)
    for k in YTVIS_STATS:
        assert ours.stats[k] == pytest.approx(plain.stats[k], abs=1e-12)
    # every GT labelled "no_occlusion" -> score 0: light range holds everything, medium/heavy have no GT
    for a in gt["annotations"]:
        a["occlusion"] = ["no_occlusion"] * len(a["segmentations"])
        assert occlusion_score(a["occlusion"]) == 0.0
    light = _fast(gt, res, ovis=True)
    _same(light, reference_ytvis(gt, res, ovis=True), OVIS_STATS)
    assert light.stats["AP_light"] == pytest.approx(light.stats["AP"], abs=1e-12)
    if gt["annotations"]:
        assert light.stats["AP_medium"] == -1 and light.stats["AR_heavy"] == -1


def test_ovis_reference_needs_equal_frame_lists():
    gt, res = random_case(100, n_videos=3, ovis=True)
    assert any(r["video_id"] == a["video_id"] for r in res for a in gt["annotations"])
    for r in res:
        r["segmentations"] = r["segmentations"] + [None]
    with pytest.raises(ValueError, match="equal length"):
        reference_ytvis(gt, res, ovis=True)
    reference_ytvis(gt, res)  # YouTube-VIS compares the common frames


def test_occlusion_score_is_the_mean_of_the_most_occluded_half():
    assert occlusion_score(["no_occlusion", "severe_occlusion", None, "slight_occlusion"]) == 0.5
    assert occlusion_score(["slight_occlusion", "no_occlusion"]) == 0.25


def test_reference_reads_paths_as_the_docs_show(tmp_path):
    gt, res = random_case(3, n_videos=2)
    (tmp_path / "valid.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(res))
    from_files = reference_ytvis(tmp_path / "valid.json", str(tmp_path / "results.json"))
    assert from_files.stats == reference_ytvis(gt, res).stats
    assert from_files.category_ids == sorted(c["id"] for c in gt["categories"])
