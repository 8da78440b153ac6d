"""ClipTracker gives the official DeVIS tracker's final tracks on the same per-clip results (issue 14).

The fixture holds hand-made per-clip results (k candidates following moving objects in a shuffled order, mask
logits for the unique slots) and the tracks ``src/models/tracker.py:Tracker`` of the official repository
returned on them (regenerate with ``scripts/official_parity/devis_tracker.py``; the official repository is
not needed here). Per case: the number of tracks, their order, scores, categories and every frame's RLE.
Cases: three-clip videos whose last clip overlaps more, a five-clip video, a video shorter than T, per-class
matching on and off, the four IoU variants, both score and both category policies, the final thresholds and
the centre cost.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidseg.models.devis.tracker import ClipTracker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_parity" / "devis_tracker.pt"
CASES = [
    "soft_volumetric",
    "binary_volumetric",
    "soft_frame_average",
    "binary_frame_average",
    "long_center_median",
    "score_weighting_thresholds",
    "category_tie",
    "short_video",
    "per_class",
    "per_class_binary",
    "per_class_frame_average",
]


@pytest.fixture(scope="module")
def official() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _run_vidseg(data: dict, case: dict) -> list:
    tracker = ClipTracker(case["n"], data["H"], data["W"], data["T"], data["S"], **case["settings"])
    for clip in case["clips"]:
        tracker.update(
            {
                "frame_scores": clip["scores"],
                "frame_labels": clip["labels"],
                "boxes": clip["boxes"],
                "centers": clip["center_points"],
                # the official tracker upsamples (here: to the same size) and applies the sigmoid itself
                "masks": clip["masks"].sigmoid().transpose(0, 1),  # [u, T, H, W]
                "mask_index": clip["inverse_idxs"],
            }
        )
    return tracker.finish()


@pytest.mark.parametrize("name", CASES)
def test_tracks_match_the_official_tracker(official: dict, name: str) -> None:
    case = official["cases"][name]
    # no stitching of the case is a near-tie, which float rounding (float32 official costs) would decide
    assert case["assignment_margin"] > 1e-3, f"{name}: a near-tie assignment; change the case"
    ours, theirs = _run_vidseg(official, case), case["tracks"]
    assert len(ours) == len(theirs), f"{name}: {len(ours)} tracks, official {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.label == b["category_id"], f"{name} track {i}: category {a.label} != {b['category_id']}"
        assert a.score == pytest.approx(b["score"], abs=1e-6), f"{name} track {i}: score"
        assert len(a.masks) == len(b["segmentations"]) == case["n"]
        for f, (ma, mb) in enumerate(zip(a.masks, b["segmentations"], strict=True)):
            assert (ma is None) == (mb is None), f"{name} track {i} frame {f}: mask presence differs"
            if ma is not None:
                assert ma["counts"] == mb["counts"], f"{name} track {i} frame {f}: masks differ"
                assert list(ma["size"]) == list(mb["size"])


def test_the_cases_exercise_the_tracker(official: dict) -> None:
    """Births, deaths and the final filters happen in the fixture (else they would go untested)."""
    cases = official["cases"]
    k_first = {n: cases[n]["clips"][0]["scores"].shape[1] for n in cases}
    per_class = [n for n in cases if cases[n]["settings"]["per_class_matching"]]
    assert per_class and all(len(cases[n]["tracks"]) > k_first[n] for n in per_class)
    thresholds = cases["score_weighting_thresholds"]
    assert len(thresholds["tracks"]) < k_first["score_weighting_thresholds"]
    assert any(m is None for t in thresholds["tracks"] for m in t["segmentations"])
