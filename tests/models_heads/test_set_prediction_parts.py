"""set_prediction: point sampling, mask costs, CE with no-object weight, point-sampled mask loss, matching."""

import pytest
import torch
import torch.nn.functional as F

from vidseg.models.set_prediction.costs import dice_cost, sigmoid_ce_cost, softmax_class_cost
from vidseg.models.set_prediction.criterion import SetCriterion, mean_object_count
from vidseg.models.set_prediction.hungarian import assign, assign_batch
from vidseg.models.set_prediction.losses import dice_loss, sigmoid_ce_loss
from vidseg.models.set_prediction.matched_losses import CELabelLoss, PointMaskLoss
from vidseg.models.set_prediction.point_sampling import point_sample, uncertain_point_coords


def test_point_sample_reads_pixel_centres_exactly():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).view(2, 3, 4, 5)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    coords = torch.stack([(xs.flatten() + 0.5) / 5, (ys.flatten() + 0.5) / 4], -1).double()  # (x, y)
    out = point_sample(x, coords[None].expand(2, -1, -1))
    assert out.shape == (2, 3, 20)
    assert torch.allclose(out, x.flatten(2), atol=1e-6, rtol=0)
    # halfway between two pixel centres: the mean of the two
    mid = point_sample(x, torch.tensor([[[1.0 / 5, 0.5 / 4]]]).expand(2, -1, -1))
    assert torch.allclose(mid[..., 0], (x[:, :, 0, 0] + x[:, :, 0, 1]) / 2)


def test_uncertain_points_prefer_logits_near_zero():
    g = torch.Generator().manual_seed(0)
    logits = torch.full((1, 1, 32, 32), 8.0)
    logits[..., :, 14:18] = 0.0  # an uncertain vertical band
    coords = uncertain_point_coords(
        logits, 200, oversample_ratio=10.0, importance_sample_ratio=0.75, generator=g
    )
    assert coords.shape == (1, 200, 2) and coords.min() >= 0 and coords.max() <= 1
    in_band = ((coords[0, :, 0] * 32 >= 13) & (coords[0, :, 0] * 32 <= 19)).float()
    assert in_band[:150].mean() > 0.9  # the importance-sampled points
    assert in_band[150:].mean() < 0.5  # the uniform rest
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_point_coords(logits, 10, oversample_ratio=0.5)


def test_mask_costs_equal_the_losses_pair_by_pair():
    torch.manual_seed(0)
    pred, tgt = torch.randn(4, 30), (torch.rand(3, 30) > 0.5).float()
    ce, dc = sigmoid_ce_cost(pred, tgt), dice_cost(pred, tgt)
    assert ce.shape == dc.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            bce = F.binary_cross_entropy_with_logits(pred[i], tgt[j])
            assert ce[i, j].item() == pytest.approx(bce.item(), rel=1e-5)
            assert dc[i, j].item() == pytest.approx(
                dice_loss(pred[i : i + 1], tgt[j : j + 1], 1.0).item(), rel=1e-5
            )
    logits = torch.randn(4, 3)
    assert torch.allclose(softmax_class_cost(logits, torch.tensor([2, 0])), -logits.softmax(-1)[:, [2, 0]])


def test_assignment_is_optimal_and_names_non_finite_costs():
    cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    rows, cols = assign(cost)
    assert rows.tolist() == [0, 1, 2] and cost[rows, cols].sum() == 5.0  # 1 + 2 + 2
    with pytest.raises(ValueError, match="MyMatcher: the cost matrix has NaN"):
        assign(torch.tensor([[float("nan")]]), "MyMatcher")
    out = assign_batch(torch.rand(2, 3, 3), [2, 1])
    assert [len(o[0]) for o in out] == [2, 1] and out[1][1].tolist() == [0]


def test_ce_label_loss_weights_no_object():
    logits = torch.randn(2, 4, 3 + 1)
    targets = [{"labels": torch.tensor([2])}, {"labels": torch.tensor([0, 1])}]
    indices = [(torch.tensor([3]), torch.tensor([0])), (torch.tensor([0, 2]), torch.tensor([1, 0]))]
    out = CELabelLoss(3, eos_coef=0.1)({"pred_logits": logits}, targets, indices, 1.0)
    tgt = torch.full((2, 4), 3)
    tgt[0, 3], tgt[1, 0], tgt[1, 2] = 2, 1, 0
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    expected = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), weight)
    assert out["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="K\\+1"):
        CELabelLoss(5)({"pred_logits": logits}, targets, indices, 1.0)


def test_point_mask_loss_approaches_the_full_resolution_loss():
    torch.manual_seed(0)
    pred = torch.randn(1, 2, 16, 16)
    pred = F.interpolate(pred, size=(64, 64), mode="bilinear", align_corners=False)  # smooth logits
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 10:40, 20:50] = True
    targets = [{"labels": torch.tensor([0]), "masks": masks}]
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    torch.manual_seed(1)
    term = PointMaskLoss(
        num_points=60000, oversample_ratio=1.0, importance_sample_ratio=0.0
    )  # uniform points
    out = term({"pred_masks": pred}, targets, indices, 1.0)
    full_src, full_tgt = pred[0, 1].flatten()[None], masks.float().flatten()[None]
    assert out["loss_mask"].item() == pytest.approx(sigmoid_ce_loss(full_src, full_tgt, 1.0).item(), rel=0.03)
    assert out["loss_dice"].item() == pytest.approx(dice_loss(full_src, full_tgt, 1.0).item(), rel=0.03)
    empty = term({"pred_masks": pred}, targets, [(torch.tensor([], dtype=torch.int64),) * 2], 1.0)
    assert empty["loss_mask"].item() == 0.0


def test_set_criterion_dispatches_terms_with_aux_suffixes_and_names_missing_keys():
    calls = []

    def term(outputs, targets, indices, num_boxes):
        calls.append((outputs["tag"], num_boxes))
        return {"loss_x": outputs["pred_logits"].sum() * 0 + len(calls), "class_error": torch.tensor(0.0)}

    term.needs = ("pred_logits", "tag")
    crit = SetCriterion(
        lambda o, t: [], {"loss_x": 1.0}, {"x": term}, aux_losses=lambda i: ["x"] if i else []
    )
    out = {"pred_logits": torch.zeros(1, 2, 3), "tag": "final"}
    out["aux_outputs"] = [
        {"pred_logits": torch.zeros(1, 2, 3), "tag": "a0"},
        {"pred_logits": torch.zeros(1, 2, 3), "tag": "a1"},
    ]
    losses = crit(out, [{"labels": torch.tensor([0, 1, 1])}])
    assert set(losses) == {"loss_x", "class_error", "loss_x_1"}  # aux 0 computes nothing; no aux class_error
    assert calls == [("final", 3.0), ("a1", 3.0)]
    assert mean_object_count(0) == 1.0 and mean_object_count(5) == 5.0
    del out["aux_outputs"][1]["tag"]
    with pytest.raises(KeyError, match="aux layer 1 has no 'tag'"):
        crit(out, [{"labels": torch.tensor([0])}])
