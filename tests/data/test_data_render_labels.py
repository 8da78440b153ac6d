"""Rendered labels sit at their own mask, inside the frame, clear of each other; the best track is placed
first (and drawn last)."""

import numpy as np
import pytest

from vidseg.visualization.render import Overlay, draw_overlays, place_labels


def _mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _near(box, mask, slack):
    ys, xs = np.nonzero(mask)
    return (
        box[0] < xs.max() + 1 + slack and box[2] > xs.min() - slack
        and box[1] < ys.max() + 1 + slack and box[3] > ys.min() - slack
    )  # fmt: skip


def _overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_labels_of_masks_at_one_corner_do_not_cover_each_other():
    h, w = 120, 200
    masks = [_mask(h, w, 40, 80, 60, 120), _mask(h, w, 40, 90, 60, 110), _mask(h, w, 40, 70, 60, 150)]
    sizes = [(70, 12)] * 3
    boxes = place_labels(masks, sizes)
    for box, m, (bw, bh) in zip(boxes, masks, sizes):
        assert 0 <= box[0] and box[2] <= w and 0 <= box[1] and box[3] <= h
        assert box[2] - box[0] == bw and box[3] - box[1] == bh
        assert _near(box, m, slack=bh + 2), (box, "is not at its mask")
    assert all(_overlap(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_labels_stay_inside_the_frame_and_the_best_gets_the_spot_above_its_mask():
    h, w = 60, 80
    corner = _mask(h, w, 0, 10, 70, 80)  # top right: "above" is outside the frame
    whole = np.ones((h, w), bool)  # an untrained model's track covering everything
    boxes = place_labels([whole, corner], [(50, 12), (50, 12)], priority=[0.2, 0.9])
    assert all(0 <= b[0] and b[2] <= w and 0 <= b[1] and b[3] <= h for b in boxes)
    assert boxes[1] == (30, 0, 80, 12)  # the best: clamped into the frame, at its mask
    assert _overlap(*boxes) == 0
    assert place_labels([np.zeros((h, w), bool)], [(5, 5)]) == [None]


@pytest.mark.parametrize("n", [2, 5])
def test_rendered_frame_shows_every_label_apart(n):
    h, w = 96, 160
    frame = np.full((h, w, 3), 40, np.uint8)
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (250, 10, 250)][:n]
    overlays = [
        Overlay(_mask(h, w, 30, 60, 40, 90 + 5 * k), c, f"{k + 1}: star 0.{9 - k}", 0.9 - 0.1 * k)
        for k, c in enumerate(colours)
    ]
    img = draw_overlays(frame, overlays, alpha=0.0)  # alpha 0: only outlines and labels carry the colours
    for c in colours:
        ys, xs = np.nonzero((img == c).all(-1))
        # the label's filled box: many pixels of its colour, over a width much larger than one outline
        assert len(ys) > 150 and xs.max() - xs.min() > 25, c
