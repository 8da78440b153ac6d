"""GRAtt-VIS targets per clip (spec §4.3) and GenVIS's unified video label assignment (spec §4.4).

The main test is a hand-made 3-step sequence (one frame per step): instance A is visible, disappears and
returns; B is always visible; C appears late. Predictions are crafted so that an unconstrained matching
would pick a *different* query than the chain must keep, so every constraint shows in the result.
"""

from __future__ import annotations

import pytest
import torch

from vidseg.models.grattvis import uvla as uvla_module
from vidseg.models.grattvis.targets import split_sequence_targets, visible_instances
from vidseg.models.grattvis.uvla import BLOCKED, UnifiedVideoLabelAssignment
from vidseg.models.set_prediction.point_sampling import point_sample
from vidseg.structures.clip_batch import ClipTargets

SIZE = 16
NUM_CLASSES = 3
REGIONS = {  # instance -> (rows, cols) of its square
    0: (slice(0, 6), slice(0, 6)),
    1: (slice(0, 6), slice(9, 15)),
    2: (slice(9, 15), slice(4, 10)),
}
LABELS = {0: 0, 1: 1, 2: 2}  # instance -> class
A, B, C = 0, 1, 2
# A: frames 0 and 2 (disappears and returns); B: every frame; C: from frame 1 (appears late).
VISIBLE = [[A, B], [B, C], [A, B, C]]


def region_mask(inst: int) -> torch.Tensor:
    """``[SIZE, SIZE]`` bool square of instance ``inst``."""
    m = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    rows, cols = REGIONS[inst]
    m[rows, cols] = True
    return m


def clip_targets(visible: list[list[int]], labels: list[int], ids: list[int] | None = None) -> ClipTargets:
    """A ClipTargets of ``len(visible)`` frames; ``visible[t]`` lists the instances visible in frame t."""
    n, frames = len(labels), len(visible)
    masks = torch.zeros(n, frames, SIZE, SIZE, dtype=torch.bool)
    for t, insts in enumerate(visible):
        for i in insts:
            masks[i, t] = region_mask(i)
    return ClipTargets(
        labels=torch.tensor(labels),
        ids=torch.tensor(ids if ids is not None else [100 + i for i in range(n)]),
        masks=masks,
        boxes=torch.zeros(n, frames, 4),
        valid=masks.flatten(2).any(-1),
    )


def step_outputs(preds: list[dict[int, tuple[int, float]]], queries: int = 4, window: int = 1) -> dict:
    """Outputs of one step for ``L*B = len(preds)`` items (``preds[n]`` is item ``n = l*B + b``, B = 1).

    ``preds[n][q] = (inst, strength)``: query q predicts the square of ``inst`` with its label's logit
    ``strength``; other queries predict an empty mask and "no object".
    """
    logits = torch.full((len(preds), 1, queries, NUM_CLASSES + 1), -4.0)
    logits[..., NUM_CLASSES] = 4.0
    masks = torch.full((len(preds), 1, queries, window, SIZE, SIZE), -8.0)
    for n, item in enumerate(preds):
        for q, (inst, strength) in item.items():
            logits[n, 0, q, NUM_CLASSES] = -4.0
            logits[n, 0, q, LABELS[inst]] = strength
            masks[n, 0, q, :, region_mask(inst)] = 8.0
    return {"pred_logits": logits, "pred_masks": masks}


def test_targets_split_valid_new_and_frames() -> None:
    t = clip_targets([[A, B], [B], [A, B]], labels=[0, 1, 2])  # instance 2 is never visible: dropped
    seq = split_sequence_targets([t], window=1)
    assert seq.num_steps == 3 and len(seq.frames) == 3
    assert [s[0].valid.tolist() for s in seq.steps] == [[True, True], [False, True], [True, True]]
    assert [s[0].new.tolist() for s in seq.steps] == [[True, True], [False, False], [False, False]]
    assert seq.steps[0][0].labels.tolist() == [0, 1] and seq.steps[0][0].ids.tolist() == [100, 101]
    assert seq.steps[1][0].masks.shape == (2, 1, SIZE, SIZE) and not seq.steps[1][0].masks[0].any()
    assert seq.frames[1]["inst"].tolist() == [1] and seq.frames[1]["labels"].tolist() == [1]
    assert seq.frames[2]["inst"].tolist() == [0, 1]
    assert torch.equal(seq.frames[2]["masks"][0], region_mask(A))
    # W = 3: one step, everything valid and new; W = 2 does not divide 3 frames.
    whole = split_sequence_targets([t], window=3)
    assert whole.num_steps == 1 and whole.steps[0][0].new.tolist() == [True, True]
    with pytest.raises(ValueError, match="LEN_CLIP_WINDOW"):
        split_sequence_targets([t], window=2)


def test_visible_means_valid_flag_and_a_mask_pixel_and_crowds_are_dropped() -> None:
    t = clip_targets([[A, B, C], [A, B, C]], labels=[0, 1, 2])
    t.valid[1, 0] = False  # B's frame 0 is flagged invalid: its pixels there do not count
    t.masks[2] = False  # C has no pixel anywhere: dropped even though its valid flags are set
    t.iscrowd = torch.tensor([True, False, False])  # A is a crowd region: dropped
    kept = visible_instances(t)
    assert kept.labels.tolist() == [1] and kept.valid.tolist() == [[False, True]]
    assert not kept.masks[0, 0].any() and kept.masks[0, 1].any()


def test_uvla_three_steps_late_arrival_disappearance_and_return() -> None:
    seq = split_sequence_targets([clip_targets(VISIBLE, labels=[0, 1, 2])], window=1)
    uvla = UnifiedVideoLabelAssignment(num_points=256, generator=torch.Generator().manual_seed(0))

    # Step 0: query 1 predicts A, query 3 predicts B. C is not visible yet.
    out0 = step_outputs([{1: (A, 6.0), 3: (B, 6.0)}])
    indices, state = uvla.assign(out0, seq.steps[0], None)
    ((q, g),) = indices
    assert g.tolist() == [0, 1, 2]  # sorted by target, every target assigned
    assert q[A] == 1 and q[B] == 3 and state.step == 1

    # Step 1: A has gone; C appears. Query 2 now predicts B best, but B keeps query 3. Query 3 predicts C
    # best, but it is bound to B (old and visible), so C goes to its next best query, 0. A keeps query 1
    # (invisible: its pair is not valid this step, so query 1 is trained as "no object").
    out1 = step_outputs([{0: (C, 4.0), 2: (B, 8.0), 3: (C, 8.0)}])
    fresh = uvla.match(out1, seq.steps[1], state)
    assert fresh[0][0][C] == 0  # the fresh assignment respects the blocked row of query 3
    indices, state = uvla.assign(out1, seq.steps[1], state)
    ((q, g),) = indices
    assert q.tolist() == [1, 3, 0] and g.tolist() == [0, 1, 2] and state.step == 2
    valid = seq.steps[1][0].valid
    assert valid.tolist() == [False, True, True]
    supervised = set(q[valid].tolist())
    assert 1 not in supervised and supervised == {0, 3}

    # Step 2: A returns; query 2 predicts A perfectly and query 1 nothing, but A is not new: it keeps query 1.
    out2 = step_outputs([{0: (C, 6.0), 2: (A, 8.0), 3: (B, 6.0)}])
    indices, state = uvla.assign(out2, seq.steps[2], state)
    ((q, g),) = indices
    assert q.tolist() == [1, 3, 0] and state.step == 3
    assert state.bound_query(0, A) == 1


def test_uvla_edge_case_a_new_instance_may_take_the_query_of_an_invisible_one() -> None:
    """Spec §4.4: only queries of *visible* old instances are blocked, so C (new at step 1) can take A's query
    while A is away; when A returns, both are bound to the same query."""
    seq = split_sequence_targets([clip_targets(VISIBLE, labels=[0, 1, 2])], window=1)
    uvla = UnifiedVideoLabelAssignment(num_points=256, generator=torch.Generator().manual_seed(1))
    _, state = uvla.assign(step_outputs([{1: (A, 6.0), 3: (B, 6.0)}]), seq.steps[0], None)
    indices, state = uvla.assign(step_outputs([{1: (C, 8.0), 3: (B, 6.0)}]), seq.steps[1], state)
    assert indices[0][0].tolist() == [1, 3, 1]
    indices, _ = uvla.assign(step_outputs([{1: (A, 6.0), 3: (B, 6.0)}]), seq.steps[2], state)
    assert indices[0][0].tolist() == [1, 3, 1]


def test_uvla_items_are_copy_major_and_each_has_its_own_chain() -> None:
    """Item n = l*B + b; two copies of two videos bind different queries from the same targets."""
    video = clip_targets([[A], [A]], labels=[0])
    seq = split_sequence_targets([video, video], window=1)
    # The one instance of each video: l=0: b=0 query 0, b=1 query 1; l=1: b=0 query 2, b=1 query 3.
    logits = torch.full((2, 2, 4, NUM_CLASSES + 1), -4.0)
    masks = torch.full((2, 2, 4, 1, SIZE, SIZE), -8.0)
    for l, b, q in [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]:
        logits[l, b, q, LABELS[A]] = 6.0
        masks[l, b, q, 0, region_mask(A)] = 8.0
    uvla = UnifiedVideoLabelAssignment(num_points=128, generator=torch.Generator().manual_seed(2))
    indices, state = uvla.assign({"pred_logits": logits, "pred_masks": masks}, seq.steps[0])
    assert [i[0].tolist() for i in indices] == [[0], [1], [2], [3]]
    # Step 1: every copy now predicts its instance with query 3; nothing is new, so every binding stays.
    logits2 = torch.full_like(logits, -4.0)
    masks2 = torch.full_like(masks, -8.0)
    logits2[..., 3, :] = 6.0
    masks2[..., 3, 0, :, :] = torch.where(region_mask(A), 8.0, -8.0)
    indices, _ = uvla.assign({"pred_logits": logits2, "pred_masks": masks2}, seq.steps[1], state)
    assert [i[0].tolist() for i in indices] == [[0], [1], [2], [3]]


def test_uvla_cost_matrix_terms_and_blocked_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost is 2*(-p_label) + 5*BCE + 5*dice on shared points; blocked entries are exactly 1e6."""
    g = torch.Generator().manual_seed(3)
    uvla = UnifiedVideoLabelAssignment(
        cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64, generator=g
    )
    logits = torch.randn(3, NUM_CLASSES + 1)
    tgt = torch.stack([region_mask(A), region_mask(B)])[:, None].expand(2, 2, SIZE, SIZE)  # W = 2 frames
    pred = torch.zeros(3, 2, SIZE, SIZE)  # sigmoid 0.5 everywhere: BCE = log 2 at every point
    cost = uvla.cost_matrix(logits, pred, torch.tensor([0, 2]), tgt)
    g.manual_seed(3)
    coords = torch.rand(1, 64, 2, generator=g)
    # The target points at the same coordinates (the prediction is constant, so only these matter).
    tp = point_sample(tgt.float(), coords.expand(2, -1, -1)).flatten(1)  # [2, 2*64]
    prob = logits.softmax(-1)
    dice = 1 - (2 * 0.5 * tp.sum(1) + 1) / (0.5 * 128 + tp.sum(1) + 1)
    expected = 2 * -prob[:, [0, 2]] + 5 * torch.log(torch.tensor(2.0)) + 5 * dice[None]
    torch.testing.assert_close(cost, expected)
    assert cost.dtype == torch.float32

    seq = split_sequence_targets([clip_targets([[A, B], [A, B, C]], labels=[0, 1, 2])], window=1)
    state = uvla.assign(step_outputs([{0: (A, 6.0), 1: (B, 6.0)}]), seq.steps[0])[1]
    # Inspect the constrained matrix of step 1 through match(): C is the only new column.
    calls = []
    real_assign = uvla_module.assign

    def spy(cost: torch.Tensor, who: str):
        calls.append(cost.clone())
        return real_assign(cost, who)

    monkeypatch.setattr(uvla_module, "assign", spy)
    uvla.match(step_outputs([{2: (C, 6.0)}]), seq.steps[1], state)
    (c,) = calls
    assert (c[:, :2] == BLOCKED).all()  # A and B are not new
    assert (c[[0, 1], 2] == BLOCKED).all() and (c[[2, 3], 2] < 100).all()  # queries of visible A, B blocked


def test_uvla_errors_are_clear() -> None:
    uvla = UnifiedVideoLabelAssignment(num_points=16)
    seq = split_sequence_targets([clip_targets([[A, B, C]], labels=[0, 1, 2])], window=1)
    with pytest.raises(ValueError, match="NUM_OBJECT_QUERIES"):
        uvla.assign(step_outputs([{}], queries=2), seq.steps[0])
    with pytest.raises(KeyError, match="pred_masks"):
        uvla.assign({"pred_logits": torch.zeros(1, 1, 4, 4)}, seq.steps[0])
    with pytest.raises(ValueError, match="all costs are 0"):
        UnifiedVideoLabelAssignment(0.0, 0.0, 0.0)
