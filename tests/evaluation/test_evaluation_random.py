"""Randomized cases (all quirks mixed) against the independent straightforward implementation in the tests."""

import copy
import warnings

import numpy as np
import pytest
from evalcase_gen import random_case
from evalref_naive import naive_ytvis, occlusion_score

from vidseg.evaluation import YTVIS_STATS, evaluate_ytvis


def _check(seed, **kw):
    gt, res = random_case(seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(res), progress=False)
    expected = naive_ytvis(gt, res)
    np.testing.assert_allclose([ours.stats[k] for k in YTVIS_STATS], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_reference(seed):
    _check(seed, n_videos=1 + seed % 5, quirks=seed % 4 != 0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12, 200))
def test_many_random_cases_match_reference(seed):
    _check(seed, n_videos=1 + seed % 6, quirks=seed % 5 != 0)


@pytest.mark.parametrize("seed", range(4))
def test_ovis_random_cases(seed):
    """OVIS: the stats at occlusion "all" equal the YouTube-VIS ones; occlusion stats follow the GT's
    occlusion scores (a case where every GT is in one occlusion range has that range's AP equal to AP)."""
    gt, res = random_case(seed + 100, n_videos=3, ovis=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(res), ovis=True, progress=False)
    expected = dict(zip(YTVIS_STATS, naive_ytvis(gt, res)))
    assert len(ours.stats) == 18
    for k in YTVIS_STATS:
        assert ours.stats[k] == pytest.approx(expected[k], abs=1e-9)
    # every GT labelled "no_occlusion" -> score 0: light range holds everything, medium/heavy have no GT
    for a in gt["annotations"]:
        a["occlusion"] = ["no_occlusion"] * len(a["segmentations"])
        assert occlusion_score(a["occlusion"]) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        light = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(res), ovis=True, progress=False)
    assert light.stats["AP_light"] == pytest.approx(light.stats["AP"], abs=1e-12)
    if gt["annotations"]:
        assert light.stats["AP_medium"] == -1 and light.stats["AR_heavy"] == -1
