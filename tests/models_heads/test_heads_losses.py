"""Loss values on hand-built cases (numbers computed by hand / with plain math)."""

import math

import pytest
import torch

from vidseg.models.set_prediction.losses import (
    box_giou_loss,
    box_l1_loss,
    dice_loss,
    focal_class_loss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_elementwise,
)


def _focal_by_hand(x: float, t: float, alpha=0.25, gamma=2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * (1 - p_t) ** gamma * ce


def test_focal_elementwise_matches_formula():
    # logit 0 (p = .5), target 1: 0.25 * 0.25 * ln 2
    val = sigmoid_focal_loss_elementwise(torch.tensor([0.0]), torch.tensor([1.0]))
    assert val.item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    x = torch.tensor([-2.0, 0.5, 3.0])
    t = torch.tensor([0.0, 1.0, 1.0])
    got = sigmoid_focal_loss_elementwise(x, t)
    for i in range(3):
        assert got[i].item() == pytest.approx(_focal_by_hand(x[i].item(), t[i].item()), rel=1e-6)


def test_focal_mask_loss_means_pixels_sums_objects():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0], [0.3, -0.3]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    per_obj = [
        sum(_focal_by_hand(logits[i, j].item(), targets[i, j].item()) for j in range(2)) / 2 for i in range(3)
    ]
    assert sigmoid_focal_loss(logits, targets, num_boxes=2.0).item() == pytest.approx(
        sum(per_obj) / 2, rel=1e-6
    )


def test_dice_loss_by_hand():
    # Object 1: p = [.5, .5], t = [1, 0] -> 1 - (2*.5 + 1) / (1 + 1 + 1) = 1/3
    # Object 2: logit +inf-ish, t = [1, 1] -> p ~ 1 -> 1 - (4 + 1) / (4 + 1) = 0
    logits = torch.tensor([[0.0, 0.0], [40.0, 40.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert dice_loss(logits, targets, num_boxes=1.0).item() == pytest.approx(1 / 3, abs=1e-6)
    assert dice_loss(logits, targets, num_boxes=2.0).item() == pytest.approx(1 / 6, abs=1e-6)


def test_focal_class_loss_is_sum_over_queries_and_classes():
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 2.0]]])  # B=1, Q=2, K=2
    target_classes = torch.tensor([[1, 2]])  # query 0 -> class 1, query 1 -> no object (K)
    expected = (
        _focal_by_hand(0.0, 0) + _focal_by_hand(1.0, 1) + _focal_by_hand(-1.0, 0) + _focal_by_hand(2.0, 0)
    )
    got = focal_class_loss(logits, target_classes, num_boxes=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_box_l1_and_giou_by_hand():
    src = torch.tensor([[0.5, 0.5, 0.2, 0.2]])  # xyxy .4,.4,.6,.6
    tgt = torch.tensor([[0.6, 0.5, 0.2, 0.2]])  # xyxy .5,.4,.7,.6
    assert box_l1_loss(src, tgt, 1.0).item() == pytest.approx(0.1, abs=1e-6)
    # intersection .1*.2=.02, union .04+.04-.02=.06, iou 1/3; hull .3*.2=.06 -> giou = iou
    assert box_giou_loss(src, tgt, 1.0).item() == pytest.approx(1 - 1 / 3, abs=1e-6)
    # disjoint boxes: iou 0, hull penalises -> giou < 0, loss > 1
    far = torch.tensor([[0.9, 0.5, 0.2, 0.2]])  # xyxy .8,.4,1,.6 ; hull .6 x .2 = .12, union .08
    assert box_giou_loss(src, far, 1.0).item() == pytest.approx(1 + (0.12 - 0.08) / 0.12, abs=1e-6)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="dice_loss"):
        dice_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
