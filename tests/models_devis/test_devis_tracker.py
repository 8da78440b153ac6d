"""The multi-cue clip tracker on hand-built clips (no model): stitching, overlap winner, short videos, the
last clip's larger overlap, per-class births and deaths, final filters and bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg.data.frame_sampling import overlapping_clips
from vidseg.models.devis.tracker import ClipTracker, mask_iou, overlap_positions
from vidseg.structures.masks import decode_segmentation

H, W = 8, 12


def box_mask(x0: int, x1: int, value: float = 0.9) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[:, x0:x1] = value
    return m


def clip_result(objs: list[dict], t: int) -> dict:
    """``objs``: per candidate ``{"x": (x0, x1) | [per position], "score": float | [..], "label": int}``."""
    k = len(objs)
    scores = torch.zeros(t, k)
    masks = torch.zeros(k, t, H, W)
    boxes = torch.zeros(t, k, 4)
    centers = torch.zeros(t, k, 2)
    for j, o in enumerate(objs):
        for p in range(t):
            s = o["score"][p] if isinstance(o["score"], list) else o["score"]
            x0, x1 = o["x"][p] if isinstance(o["x"], list) else o["x"]
            scores[p, j] = s
            masks[j, p] = box_mask(x0, x1)
            boxes[p, j] = torch.tensor([x0, 0, x1, H], dtype=torch.float32)
            centers[p, j] = torch.tensor([(x0 + x1) / 2 / W, 0.5])
    return {
        "frame_scores": scores,
        "labels": torch.tensor([o["label"] for o in objs]),
        "boxes": boxes,
        "centers": centers,
        "masks": masks,
    }


def columns(track, frame) -> tuple[int, int] | None:
    m = decode_segmentation(track.masks[frame], H, W)
    if m is None:
        return None
    cols = m.any(0).nonzero()[0]
    return int(cols.min()), int(cols.max()) + 1


def test_overlap_positions_follow_the_clip_layout():
    clips = overlapping_clips(11, 6, 4)  # starts 0, 4, then the last clip 5..10 (last_real_idx 3)
    assert [c.start for c in clips] == [0, 4, 5]
    assert [overlap_positions(c, i, 6, 4) for i, c in enumerate(clips)] == [0, 2, 5]


def test_soft_binary_and_frame_average_iou_differ():
    a = torch.stack([box_mask(0, 4, 1.0), box_mask(0, 4, 1.0)])
    b = torch.stack([box_mask(0, 4, 1.0), box_mask(0, 2, 0.6)])
    assert mask_iou(a, b, binary=True) == pytest.approx((4 + 2) / (4 + 4))
    assert mask_iou(a, b, binary=True, frame_average=True) == pytest.approx((1 + 0.5) / 2)
    soft = (4 * H + 2 * H * 0.6) / (4 * H + 4 * H)
    assert mask_iou(a, b) == pytest.approx(soft)


def test_stitching_across_two_clips_follows_the_masks_not_the_slot_order():
    t, s = 4, 2
    tracker = ClipTracker(6, H, W, t, s)
    tracker.update(
        clip_result([{"x": (0, 3), "score": 0.9, "label": 1}, {"x": (6, 9), "score": 0.8, "label": 2}], t)
    )
    # the second clip lists the objects the other way round
    tracker.update(
        clip_result([{"x": (6, 9), "score": 0.7, "label": 2}, {"x": (0, 3), "score": 0.6, "label": 1}], t)
    )
    tracks = tracker.finish()
    assert len(tracks) == 2
    left, right = tracks
    assert left.label == 1 and right.label == 2
    assert [columns(left, f) for f in range(6)] == [(0, 3)] * 6
    assert [columns(right, f) for f in range(6)] == [(6, 9)] * 6
    # overlap frames 2, 3 keep the first clip's higher scores; frames 4, 5 come from the second clip
    assert left.frame_scores == pytest.approx([0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    assert left.score == pytest.approx((0.9 * 4 + 0.6 * 2) / 6)
    assert left.boxes[0] == [0.0, 0.0, 3.0, float(H)]


def test_class_and_score_cues_decide_when_masks_tie():
    t, s = 4, 2
    tracker = ClipTracker(6, H, W, t, s, mask_cost=1.0, class_cost=1.0, score_cost=1.0)
    same = (0, 4)
    tracker.update(
        clip_result([{"x": same, "score": 0.9, "label": 1}, {"x": same, "score": 0.2, "label": 0}], t)
    )
    tracker.update(
        clip_result([{"x": same, "score": 0.2, "label": 0}, {"x": same, "score": 0.9, "label": 1}], t)
    )
    a, b = tracker.finish()
    assert a.label == 1 and b.label == 0
    assert a.frame_scores[5] == pytest.approx(0.9) and b.frame_scores[5] == pytest.approx(0.2)


def test_overlap_winner_takes_every_attribute_of_the_frame():
    t, s = 4, 2
    tracker = ClipTracker(6, H, W, t, s)
    tracker.update(clip_result([{"x": (0, 4), "score": [0.9, 0.9, 0.3, 0.9], "label": 1}], t))
    # frame 2: the new clip scores higher (and sees the object shifted, with another class); frame 3: lower
    tracker.update(
        clip_result([{"x": [(1, 5), (1, 5), (2, 6), (2, 6)], "score": [0.8, 0.5, 0.4, 0.4], "label": 3}], t)
    )
    (track,) = tracker.finish()
    assert track.frame_scores[2] == pytest.approx(0.8) and columns(track, 2) == (1, 5)
    assert track.boxes[2] == [1.0, 0.0, 4.0, float(H)]
    assert track.frame_scores[3] == pytest.approx(0.9) and columns(track, 3) == (0, 4)
    assert [columns(track, f) for f in (4, 5)] == [(2, 6), (2, 6)]
    # labels per frame: 1, 1, 3, 1, 3, 3 -> most common 1 vs score-weighted
    assert track.label in (1, 3)


def test_final_class_policies():
    t, s = 4, 2
    objs1 = [{"x": (0, 4), "score": [0.1, 0.1, 0.1, 0.1], "label": 1}]
    objs2 = [{"x": (0, 4), "score": [0.05, 0.05, 0.9, 0.9], "label": 2}]
    labels = {}
    for policy in ("most_common", "score_weighting"):
        tracker = ClipTracker(6, H, W, t, s, final_class_policy=policy)
        tracker.update(clip_result(objs1, t))
        tracker.update(clip_result(objs2, t))
        labels[policy] = tracker.finish()[0].label
    assert labels == {"most_common": 1, "score_weighting": 2}  # 4 frames of 1 at 0.1 vs 2 frames of 2 at 0.9


def test_video_shorter_than_t_is_cut_to_its_length():
    t = 6
    clips = overlapping_clips(4, t, 4)
    assert len(clips) == 1 and clips[0].num_real == 4
    tracker = ClipTracker(4, H, W, t, 4)
    # ping-pong positions 4, 5 repeat frames 2, 1 with other masks: they must not count
    res = clip_result([{"x": [(0, 2)] * 4 + [(8, 12)] * 2, "score": [0.5] * 4 + [0.99] * 2, "label": 0}], t)
    res["clip"] = clips[0]
    tracker.update(res)
    (track,) = tracker.finish()
    assert len(track.masks) == 4 and [columns(track, f) for f in range(4)] == [(0, 2)] * 4
    assert track.score == pytest.approx(0.5)


def test_last_clip_that_overlaps_more():
    t, s, n = 4, 2, 7  # clips at 0, 2 and the last one at 3 (last_real_idx 1: frames 3, 4, 5 overlap)
    clips = overlapping_clips(n, t, s)
    assert [c.start for c in clips] == [0, 2, 3] and clips[-1].last_real_idx == 1
    tracker = ClipTracker(n, H, W, t, s)
    a, b = {"x": (0, 3), "label": 0}, {"x": (8, 11), "label": 1}
    tracker.update(clip_result([{**a, "score": 0.5}, {**b, "score": 0.5}], t))
    tracker.update(clip_result([{**b, "score": 0.6}, {**a, "score": 0.6}], t))
    # the last clip matches through all three overlap frames; frame 3 is won by it, frames 4 and 5 are not
    tracker.update(
        clip_result([{**a, "score": [0.7, 0.1, 0.1, 0.4]}, {**b, "score": [0.7, 0.1, 0.1, 0.4]}], t)
    )
    ta, tb = tracker.finish()
    assert ta.label == 0 and tb.label == 1
    assert ta.frame_scores == pytest.approx([0.5, 0.5, 0.6, 0.7, 0.6, 0.6, 0.4])
    assert [columns(ta, f) for f in range(n)] == [(0, 3)] * n


def test_per_class_matching_gives_births_and_deaths():
    t, s = 4, 2
    tracker = ClipTracker(6, H, W, t, s, per_class_matching=True)
    tracker.update(
        clip_result([{"x": (0, 3), "score": 0.9, "label": 1}, {"x": (6, 9), "score": 0.8, "label": 2}], t)
    )
    # class 2 disappears, class 4 appears where it was
    tracker.update(
        clip_result([{"x": (0, 3), "score": 0.7, "label": 1}, {"x": (6, 9), "score": 0.6, "label": 4}], t)
    )
    tracks = tracker.finish()
    assert [tr.label for tr in tracks] == [1, 2, 4]
    one, dead, born = tracks
    assert all(one.masks[f] is not None for f in range(6))
    assert [dead.masks[f] is not None for f in range(6)] == [True] * 4 + [False] * 2
    assert [born.masks[f] is not None for f in range(6)] == [False] * 2 + [True] * 4
    # without per-class matching the same clips give two full-length tracks
    tracker = ClipTracker(6, H, W, t, s)
    tracker.update(
        clip_result([{"x": (0, 3), "score": 0.9, "label": 1}, {"x": (6, 9), "score": 0.8, "label": 2}], t)
    )
    tracker.update(
        clip_result([{"x": (0, 3), "score": 0.7, "label": 1}, {"x": (6, 9), "score": 0.6, "label": 4}], t)
    )
    assert len(tracker.finish()) == 2


def test_final_filters():
    t, s = 4, 2
    objs = [
        {"x": (0, 3), "score": 0.5, "label": 0},
        {
            "x": (4, 6),
            "score": [0.0005, 0.0005, 0.0005, 0.5],
            "label": 1,
        },  # 4 of 6 frames below MIN_FRAME_SCORE
        {"x": (8, 11), "score": 0.0015, "label": 2},  # every frame valid, track score <= MIN_TRACK_SCORE
    ]
    tracker = ClipTracker(6, H, W, t, s, min_detections=4)
    tracker.update(clip_result(objs, t))
    tracker.update(clip_result(objs, t))
    tracks = tracker.finish()
    assert [tr.label for tr in tracks] == [0]
    tracker = ClipTracker(6, H, W, t, s, min_detections=1, min_track_score=0.001)
    tracker.update(clip_result(objs, t))
    tracker.update(clip_result(objs, t))
    tracks = tracker.finish()
    assert [tr.label for tr in tracks] == [0, 1, 2]
    mid = tracks[1]
    assert [m is not None for m in mid.masks] == [False, False, False, True, False, True]
    assert mid.score == pytest.approx(0.5)


def test_soft_masks_are_encoded_as_they_leave_the_overlap():
    t, s, n = 4, 2, 40
    tracker = ClipTracker(n, H, W, t, s)
    peak = 0
    for _ in overlapping_clips(n, t, s):
        tracker.update(clip_result([{"x": (0, 3), "score": 0.5, "label": 0}] * 3, t))
        peak = max(peak, tracker.num_soft_masks())
    assert peak <= 3 * (t - s)  # only the frames the next clip covers again
    assert len(tracker.finish()) == 3


def test_wrong_number_of_clips_is_one_clear_error():
    tracker = ClipTracker(6, H, W, 4, 2)
    tracker.update(clip_result([{"x": (0, 3), "score": 0.5, "label": 0}], 4))
    with pytest.raises(ValueError, match="1 of 2 clips"):
        tracker.finish()


def test_pairwise_iou_matches_the_pair_by_pair_iou():
    from vidseg.models.devis.tracker import _pairwise_iou

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 2, H, W, generator=g), torch.rand(4, 2, H, W, generator=g)
    for binary in (False, True):
        for avg in (False, True):
            got = _pairwise_iou(a, b, binary, avg)
            want = [[mask_iou(a[i], b[j], binary, avg) for j in range(4)] for i in range(3)]
            assert np.allclose(got, np.array(want), atol=1e-5), (binary, avg)


@pytest.mark.parametrize(
    "name",
    [
        "devis/YT-19/devis_R_50_YT-19.yaml",
        "devis/OVIS/devis_R_50_OVIS.yaml",
        "devis/ablations/devis_ablation6_TEST_multi-cue_tracking.yaml",
        "devis/ablations/devis_ablation0_deformable_vistr.yaml",
    ],
)
def test_configs_map_to_the_tracker(name):
    from vidseg.models import load_config
    from vidseg.models.devis.build import build_clip_inference

    cfg = load_config(name)
    inf = build_clip_inference(cfg)
    c = cfg.TEST.CLIP_TRACKING
    assert (inf.num_frames, inf.stride) == (cfg.MODEL.DEVIS.NUM_FRAMES, c.STRIDE)
    tracker = inf.tracker(20, 4, 4)
    assert tracker.weights == (c.MASK_COST, c.CLASS_COST, c.SCORE_COST, c.CENTER_COST)
    assert (tracker.per_class, tracker.binary_iou, tracker.frame_avg) == (
        c.PER_CLASS_MATCHING,
        c.USE_BINARY_MASK_IOU,
        c.USE_FRAME_AVERAGE_IOU,
    )
    assert len(tracker.clips) == len(overlapping_clips(20, inf.num_frames, inf.stride))


def test_bad_tracking_settings_are_one_line_errors():
    from vidseg.models import load_config
    from vidseg.models.devis.build import build_clip_inference

    with pytest.raises(ValueError, match="TEST.CLIP_TRACKING.STRIDE: 7 must be in 1..6"):
        build_clip_inference(
            load_config("devis/YT-19/devis_R_50_YT-19.yaml", ["TEST.CLIP_TRACKING.STRIDE", "7"])
        )
    bad = ["TEST.CLIP_TRACKING.FINAL_SCORE_POLICY", "max"]
    with pytest.raises(ValueError, match="FINAL_SCORE_POLICY: 'max'"):
        build_clip_inference(load_config("devis/YT-19/devis_R_50_YT-19.yaml", bad))
