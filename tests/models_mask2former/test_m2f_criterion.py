"""Mask2Former's matcher, importance sampling and criterion (built from models/set_prediction)."""

from __future__ import annotations

import torch

from vidseg.models.mask2former.criterion import mask2former_criterion, mask2former_weight_dict
from vidseg.models.mask2former.matcher import MaskHungarianMatcher
from vidseg.models.set_prediction.point_sampling import point_sample, uncertain_point_coords


def test_importance_sampling_shapes_ratio_and_determinism():
    # Logit 0 (most uncertain) on the left half, +-8 on the right half.
    logits = torch.full((3, 1, 16, 16), 8.0)
    logits[..., :8] = 0.0
    torch.manual_seed(5)
    coords = uncertain_point_coords(logits, 400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert coords.shape == (3, 400, 2) and coords.min() >= 0 and coords.max() <= 1
    uncertain, uniform = coords[:, :300], coords[:, 300:]
    # The 300 most uncertain of 1200 candidates: about 600 fall on the left half, so all 300 do.
    assert (uncertain[..., 0] < 0.5).all()
    # The last 25% are uniform: both halves.
    share = (uniform[..., 0] < 0.5).float().mean().item()
    assert 0.35 < share < 0.65
    torch.manual_seed(5)
    again = uncertain_point_coords(logits, 400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    torch.testing.assert_close(coords, again)
    g = torch.Generator().manual_seed(1)
    other = uncertain_point_coords(logits, 400, generator=g)
    assert not torch.equal(other, coords)


def _masks(g: int, h: int = 32, w: int = 32) -> torch.Tensor:
    m = torch.zeros(g, h, w, dtype=torch.bool)
    for i in range(g):
        m[i, 4 * i : 4 * i + 10, 3 * i : 3 * i + 12] = True
    return m


def test_matcher_recovers_a_permutation_and_keeps_its_invariants():
    tgt = _masks(4)
    labels = torch.tensor([0, 1, 2, 1])
    q = 9
    perm = torch.tensor([7, 2, 5, 0])  # query perm[g] predicts target g perfectly
    logits = torch.full((1, q, 4), -4.0)
    masks = torch.full((1, q, 32, 32), -6.0)
    for g, p in enumerate(perm.tolist()):
        logits[0, p, labels[g]] = 6.0
        masks[0, p] = torch.where(tgt[g], 6.0, -6.0)
    matcher = MaskHungarianMatcher(num_points=2000)
    torch.manual_seed(0)
    ((pred, tg),) = matcher({"pred_logits": logits, "pred_masks": masks}, [{"labels": labels, "masks": tgt}])
    assert pred.dtype == torch.int64 and pred.tolist() == sorted(pred.tolist())
    assert len(set(pred.tolist())) == 4 and len(set(tg.tolist())) == 4
    assert dict(zip(tg.tolist(), pred.tolist())) == dict(enumerate(perm.tolist()))


def test_matcher_more_targets_than_queries_empty_images_and_the_cost_terms():
    matcher = MaskHungarianMatcher(cost_class=0.0, cost_mask=1.0, cost_dice=0.0, num_points=500)
    logits, masks = torch.randn(2, 3, 3), torch.randn(2, 3, 16, 16)
    targets = [
        {"labels": torch.tensor([0, 1, 0, 1, 0]), "masks": _masks(5, 16, 16)},
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)},
    ]
    out = matcher({"pred_logits": logits, "pred_masks": masks}, targets)
    assert len(out[0][0]) == 3 and out[1][0].numel() == 0 and out[1][1].numel() == 0
    # The BCE cost is the mean BCE over the shared points: a constant mask has the exact BCE.
    c = MaskHungarianMatcher(cost_class=0, cost_mask=1, cost_dice=0, num_points=100).cost_matrix(
        torch.zeros(1, 3), torch.zeros(1, 8, 8), torch.tensor([0]), torch.ones(1, 8, 8, dtype=torch.bool)
    )
    torch.testing.assert_close(c, torch.tensor([[0.6931472]]))


def _outputs(q: int = 6, k: int = 3, aux: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def layer():
        return {
            "pred_logits": torch.randn(2, q, k + 1, generator=g, requires_grad=True),
            "pred_masks": torch.randn(2, q, 8, 8, generator=g, requires_grad=True),
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(aux)]
    return out


def _targets():
    return [
        {"labels": torch.tensor([0, 2]), "masks": _masks(2)},
        {"labels": torch.tensor([1]), "masks": _masks(1)},
    ]


def test_criterion_keys_weights_deep_supervision_and_no_object_weight():
    weights = mask2former_weight_dict(2.0, 5.0, 5.0, num_aux=2)
    assert weights == {
        "loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0,
        "loss_ce_0": 2.0, "loss_mask_0": 5.0, "loss_dice_0": 5.0,
        "loss_ce_1": 2.0, "loss_mask_1": 5.0, "loss_dice_1": 5.0,
    }  # fmt: skip
    crit = mask2former_criterion(3, MaskHungarianMatcher(num_points=256), weights, num_points=256)
    torch.manual_seed(0)
    out = _outputs()
    losses = crit(out, _targets())
    assert set(weights) <= set(losses)
    total = crit.weighted_total(losses)
    total.backward()
    assert out["aux_outputs"][1]["pred_masks"].grad.abs().sum() > 0
    torch.testing.assert_close(crit.terms["labels"].empty_weight, torch.tensor([1.0, 1.0, 1.0, 0.1]))


def test_criterion_is_small_on_perfect_predictions_and_large_on_wrong_ones():
    tgt = _targets()
    q, k = 4, 3
    good = {"pred_logits": torch.full((2, q, k + 1), -10.0), "pred_masks": torch.full((2, q, 32, 32), -10.0)}
    good["pred_logits"][..., -1] = 10.0  # every unmatched query says "no object"
    for b, t in enumerate(tgt):
        for g, (lbl, m) in enumerate(zip(t["labels"], t["masks"])):
            good["pred_logits"][b, g] = -10.0
            good["pred_logits"][b, g, lbl] = 10.0
            good["pred_masks"][b, g] = torch.where(m, 10.0, -10.0)
    crit = mask2former_criterion(
        k, MaskHungarianMatcher(num_points=512), mask2former_weight_dict(num_aux=0), num_points=512
    )
    torch.manual_seed(0)
    low = crit(good, tgt)
    bad = {"pred_logits": -good["pred_logits"], "pred_masks": -good["pred_masks"]}
    high = crit(bad, tgt)
    # The points sit where the prediction is least certain: on the mask edges, where both the prediction and
    # the bilinearly read target are near 0.5, so even a perfect mask keeps some BCE there.
    for key, most, least in (("loss_ce", 1e-3, 1.0), ("loss_mask", 0.2, 1.0), ("loss_dice", 0.2, 0.6)):
        assert low[key] < most and high[key] > least, (key, low[key], high[key])


def test_point_sample_reads_the_target_where_the_losses_do():
    m = _masks(1).float()[:, None]
    coords = torch.tensor([[[0.2, 0.2], [0.9, 0.9]]])  # inside / outside the first mask
    assert point_sample(m, coords)[0, 0].tolist() == [1.0, 0.0]
