"""Hungarian matcher: hand-built costs, optimality, batched == one-by-one, empty targets."""

import itertools
import math

import pytest
import torch

from vidseg.models.devis.clip_matcher import ClipHungarianMatcher, pad_matched_queries
from vidseg.models.set_prediction.costs import focal_class_cost, smoothed_giou
from vidseg.models.set_prediction.matcher import HungarianMatcher


def _rand_boxes(n: int) -> torch.Tensor:
    cxcy = torch.rand(n, 2) * 0.6 + 0.2
    wh = torch.rand(n, 2) * 0.3 + 0.05
    return torch.cat([cxcy, wh], 1)


def test_focal_class_cost_by_hand():
    p = torch.tensor([0.5])
    pos = 0.25 * 0.25 * -math.log(0.5 + 1e-8)
    neg = 0.75 * 0.25 * -math.log(0.5 + 1e-8)
    assert focal_class_cost(p).item() == pytest.approx(pos - neg, rel=1e-6)


def test_cost_values_on_tiny_case():
    m = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    logits = torch.tensor([[0.0, 0.0]])  # one query, p = .5 for both classes
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    tgt = torch.tensor([[0.6, 0.5, 0.2, 0.2]])
    cost = m.cost_matrix(logits, pred, torch.tensor([1]), tgt)
    class_cost = 0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2)
    l1 = 0.1
    giou = 1 / 3  # see the GIoU hand computation in test_heads_losses
    assert cost.shape == (1, 1)
    assert cost.item() == pytest.approx(2 * class_cost + 5 * l1 - 2 * giou, rel=1e-5)


def test_assignment_is_optimal_against_brute_force():
    m = HungarianMatcher()
    q, g, k = 5, 3, 4
    logits = torch.randn(1, q, k)
    boxes = _rand_boxes(q)[None]
    tgt = {"labels": torch.randint(0, k, (g,)), "boxes": _rand_boxes(g)}
    ((rows, cols),) = m({"pred_logits": logits, "pred_boxes": boxes}, [tgt])
    c = m.cost_matrix(logits[0], boxes[0], tgt["labels"], tgt["boxes"])
    got = c[rows, cols].sum().item()
    best = min(sum(c[p[j], j].item() for j in range(g)) for p in itertools.permutations(range(q), g))
    assert got == pytest.approx(best, rel=1e-6)
    assert (
        len(rows) == g and rows.tolist() == sorted(rows.tolist()) and sorted(cols.tolist()) == list(range(g))
    )


def test_a_perfect_query_is_matched_to_its_target():
    m = HungarianMatcher()
    boxes = _rand_boxes(6)
    logits = torch.full((1, 6, 3), -5.0)
    tgt_boxes = boxes[[4, 1]]
    logits[0, 4, 2] = 5.0
    logits[0, 1, 0] = 5.0
    ((rows, cols),) = m(
        {"pred_logits": logits, "pred_boxes": boxes[None]},
        [{"labels": torch.tensor([2, 0]), "boxes": tgt_boxes}],
    )
    assert dict(zip(rows.tolist(), cols.tolist())) == {1: 1, 4: 0}


def test_batched_equals_one_by_one_with_empty_targets():
    m = HungarianMatcher(cost_class=1.0)
    bs, q, k = 4, 7, 5
    logits = torch.randn(bs, q, k)
    boxes = torch.stack([_rand_boxes(q) for _ in range(bs)])
    sizes = [3, 0, 7, 1]
    targets = [{"labels": torch.randint(0, k, (n,)), "boxes": _rand_boxes(n)} for n in sizes]
    batched = m({"pred_logits": logits, "pred_boxes": boxes}, targets)
    for b in range(bs):
        ((r, c),) = m({"pred_logits": logits[b : b + 1], "pred_boxes": boxes[b : b + 1]}, [targets[b]])
        assert torch.equal(batched[b][0], r) and torch.equal(batched[b][1], c)
        assert len(r) == min(q, sizes[b])
        assert r.dtype == torch.int64


def test_all_targets_empty():
    m = HungarianMatcher()
    out = m(
        {"pred_logits": torch.randn(2, 3, 2), "pred_boxes": torch.rand(2, 3, 4)},
        [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2,
    )
    assert [(len(i), len(j)) for i, j in out] == [(0, 0), (0, 0)]


def test_bad_inputs_are_reported():
    m = HungarianMatcher()
    with pytest.raises(KeyError, match="pred_boxes"):
        m({"pred_logits": torch.randn(1, 3, 2)}, [{"labels": torch.tensor([0]), "boxes": torch.rand(1, 4)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]"):
        m(
            {"pred_logits": torch.randn(1, 3, 2), "pred_boxes": torch.rand(1, 3, 4)},
            [{"labels": torch.tensor([0, 1]), "boxes": torch.rand(1, 4)}],
        )
    nan_boxes = torch.full((1, 3, 4), float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        m(
            {"pred_logits": torch.randn(1, 3, 2), "pred_boxes": nan_boxes},
            [{"labels": torch.tensor([0]), "boxes": torch.rand(1, 4)}],
        )
    with pytest.raises(ValueError, match="all costs"):
        HungarianMatcher(0, 0, 0)


def test_pad_matched_queries():
    indices = [
        (torch.tensor([2, 5]), torch.tensor([1, 0])),
        (torch.tensor([], dtype=torch.int64),) * 2,
        (torch.tensor([0, 1, 3]), torch.tensor([0, 1, 2])),
    ]
    query_idx, counts = pad_matched_queries(indices, num_queries=6)
    assert counts == [2, 0, 3]
    assert query_idx.shape == (3, 3)
    assert query_idx[0, :2].tolist() == [2, 5] and query_idx[2].tolist() == [0, 1, 3]
    for row, (pred, _) in zip(query_idx, indices):
        assert len(set(row.tolist())) == 3  # padding uses distinct unmatched queries
        assert not set(row[len(pred) :].tolist()) & set(pred.tolist())


# ---------------------------------------------------------------------------------------------- clip matcher
def test_smoothed_giou_by_hand():
    a = torch.tensor([0.4, 0.4, 0.6, 0.6])
    b = torch.tensor([0.5, 0.4, 0.7, 0.6])
    # inter .02, union .06, hull .06
    assert smoothed_giou(a, b).item() == pytest.approx((0.02 + 1e-6) / (0.06 + 1e-6) - 1e-6 / (0.06 + 1e-6))
    tiny = torch.tensor([0.5, 0.5, 0.5 + 1e-6, 0.5 + 1e-6])
    g = smoothed_giou(tiny, tiny)  # the smoothing dominates for 1e-6 boxes: finite, about 0 (as in DeVIS)
    assert torch.isfinite(g) and abs(g.item()) < 1e-3


def test_clip_cost_by_hand():
    m = ClipHungarianMatcher(num_frames=2, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    logits = torch.zeros(2, 2)  # T=2, Nq=1, K=2: p = .5 everywhere
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    tgt = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]])  # frame 1 shifted by .1 in x
    cost = m.cost_matrix(logits, boxes, torch.tensor([1]), tgt)
    cls = 0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2)
    l1 = (0.0 + 0.1 / 4) / 2
    g1 = (0.02 + 1e-6) / (0.06 + 1e-6) - 1e-6 / (0.06 + 1e-6)
    giou = -(1.0 + g1) / 2
    assert cost.shape == (1, 1)
    assert cost.item() == pytest.approx(cls + 5 * l1 + 2 * giou, rel=1e-4)


def test_clip_matcher_finds_the_trajectory_and_orders_indices():
    t, nq, k = 3, 4, 2
    boxes = torch.stack([_rand_boxes(nq) for _ in range(t)])  # [T, Nq, 4]
    logits = torch.full((t, nq, k), -5.0)
    logits[:, 2, 1] = 5.0  # slot 2 is instance 1 (class 1)
    logits[:, 0, 0] = 5.0  # slot 0 is instance 0 (class 0)
    tgt_boxes = torch.stack([boxes[:, 0], boxes[:, 2]])  # [N=2, T, 4], instance-major
    targets = [
        {
            "labels": torch.tensor([0, 0, 0, 1, 1, 1]),
            "boxes": tgt_boxes.flatten(0, 1),
            "valid": torch.tensor([True, True, False, True, False, True]),
        }
    ]
    outputs = {"pred_logits": logits.flatten(0, 1)[None], "pred_boxes": boxes.flatten(0, 1)[None]}
    ((pred, tgt, valid),) = ClipHungarianMatcher(num_frames=t)(outputs, targets)
    assert pred.tolist() == [0, 4, 8, 2, 6, 10]  # t * Nq + slot, slots in ascending order
    assert tgt.tolist() == [0, 1, 2, 3, 4, 5]  # g * T + t
    assert valid.tolist() == [True, True, False, True, False, True]


def test_clip_matcher_without_instances_gives_the_dummy_match():
    out = {"pred_logits": torch.randn(1, 6, 2), "pred_boxes": torch.rand(1, 6, 4)}
    tgt = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4), "valid": torch.zeros(0)}]
    ((pred, tgt_idx, valid),) = ClipHungarianMatcher(num_frames=3)(out, tgt)
    assert pred.tolist() == [0, 2, 4] and tgt_idx.tolist() == [0, 1, 2] and not valid.any()
    with pytest.raises(ValueError, match="not divisible"):
        ClipHungarianMatcher(num_frames=4)(out, tgt)
