"""The GRAtt-VIS criterion (spec §4.5) on hand-made outputs shaped as the model's (the interface contract).

The 3-step sequence of ``test_gratt_uvla`` is reused: A is visible in frames 0 and 2, B always, C from frame
1; the predictions bind A to query 1, B to query 3 and C to query 0, so every expected value can be written
down.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_gratt_uvla import LABELS, NUM_CLASSES, SIZE, VISIBLE, A, B, C, clip_targets, region_mask

from vidseg.models.grattvis.criterion import GRAttVISCriterion, grattvis_criterion, grattvis_weight_dict
from vidseg.models.grattvis.uvla import UnifiedVideoLabelAssignment
from vidseg.models.mask2former.matcher import MaskHungarianMatcher
from vidseg.structures.clip_batch import ClipTargets

QUERIES, FRAME_QUERIES, DIM = 4, 3, 4
# Per step: query -> (instance, class logit); query 1 predicts nothing while A is away.
PREDS = [{1: (A, 6.0), 3: (B, 6.0)}, {0: (C, 4.0), 3: (B, 6.0)}, {0: (C, 6.0), 1: (A, 6.0), 3: (B, 6.0)}]
# The bindings the assignment must produce, per step: query -> class target (others "no object").
EXPECTED = [
    {1: LABELS[A], 3: LABELS[B]},
    {0: LABELS[C], 3: LABELS[B]},
    {0: LABELS[C], 1: LABELS[A], 3: LABELS[B]},
]


def layer(preds: list[dict[int, tuple[int, float]]], copies: int, videos: int, window: int = 1) -> dict:
    """One layer's ``pred_logits [L, B, cQ, K+1]`` / ``pred_masks [L, B, cQ, W, S, S]`` / ``pred_cq_embed``.

    ``preds[n]`` (item ``n = l*B + b``) maps a query to the instance it predicts and its class logit.
    """
    logits = torch.full((copies, videos, QUERIES, NUM_CLASSES + 1), -4.0)
    logits[..., NUM_CLASSES] = 4.0
    masks = torch.full((copies, videos, QUERIES, window, SIZE, SIZE), -8.0)
    for n, item in enumerate(preds):
        l, b = divmod(n, videos)
        for q, (inst, strength) in item.items():
            logits[l, b, q, NUM_CLASSES] = -4.0
            logits[l, b, q, LABELS[inst]] = strength
            masks[l, b, q, :, region_mask(inst)] = 8.0
    cq = torch.randn(copies, videos, QUERIES, DIM)
    return {
        "pred_logits": logits.requires_grad_(),
        "pred_masks": masks.requires_grad_(),
        "pred_cq_embed": cq.requires_grad_(),
    }


def sequence_outputs(
    preds_per_step: list[list[dict]], copies: int = 1, videos: int = 1, num_aux: int = 2
) -> dict:
    """Model-like training outputs: every layer (final and aux) predicts the same; random frame outputs."""
    steps = []
    for preds in preds_per_step:
        step = layer(preds, copies, videos)
        step["pred_fq_embed"] = torch.randn(copies, videos, 1, FRAME_QUERIES, DIM).requires_grad_()
        step["aux_outputs"] = [layer(preds, copies, videos) for _ in range(num_aux)]
        step["soft_gates"] = [
            torch.rand(copies * videos, QUERIES).requires_grad_() for _ in range(num_aux + 1)
        ]
        steps.append(step)
    frames = videos * len(preds_per_step)
    frame_outputs = [
        {
            "pred_logits": torch.randn(frames, FRAME_QUERIES, NUM_CLASSES + 1),
            "pred_masks": torch.randn(frames, FRAME_QUERIES, SIZE // 2, SIZE // 2),
        }
        for _ in range(copies)
    ]
    return {"steps": steps, "frame_outputs": frame_outputs, "num_layers_copies": copies, "window": 1}


def criterion(**kw) -> GRAttVISCriterion:
    g = torch.Generator().manual_seed(0)
    kw.setdefault("num_points", 64)
    return GRAttVISCriterion(
        NUM_CLASSES,
        UnifiedVideoLabelAssignment(num_points=64, generator=g),
        MaskHungarianMatcher(num_points=64, generator=g),
        **kw,
    )


def expected_ce(logits: torch.Tensor, targets: dict[int, int]) -> torch.Tensor:
    """torch's weighted CE over ``[L, B, cQ, K+1]`` logits; ``targets`` query -> class for every item."""
    flat = logits.detach().reshape(-1, QUERIES, NUM_CLASSES + 1)
    target = torch.full(flat.shape[:2], NUM_CLASSES)
    for q, c in targets.items():
        target[:, q] = c
    weight = torch.tensor([1.0] * NUM_CLASSES + [0.1])
    return F.cross_entropy(flat.reshape(-1, NUM_CLASSES + 1), target.reshape(-1), weight=weight)


def test_ce_is_torchs_weighted_ce_with_the_chained_bindings_and_aux_keys() -> None:
    targets = [clip_targets(VISIBLE, labels=[0, 1, 2])]
    torch.manual_seed(0)
    out = sequence_outputs([[p, p] for p in PREDS], copies=2)  # two layer copies predicting alike
    for step in out["steps"]:  # copy 1 gets other class logits (the masks still decide the matching)
        with torch.no_grad():
            step["pred_logits"][1] += torch.randn(QUERIES, NUM_CLASSES + 1)
    losses = criterion()(out, targets)
    expected = sum(expected_ce(s["pred_logits"], e) for s, e in zip(out["steps"], EXPECTED))
    torch.testing.assert_close(losses["loss_genvis_ce"], expected)
    # Step 1: query 1 (bound to the invisible A) is trained as "no object": A's label there would change it.
    wrong = {**EXPECTED[1], 1: LABELS[A]}
    assert not torch.isclose(
        expected_ce(out["steps"][1]["pred_logits"], wrong),
        expected_ce(out["steps"][1]["pred_logits"], EXPECTED[1]),
    )
    for i in range(2):
        aux = sum(expected_ce(s["aux_outputs"][i]["pred_logits"], e) for s, e in zip(out["steps"], EXPECTED))
        torch.testing.assert_close(losses[f"loss_genvis_ce_{i}"], aux)
    assert set(losses) == {
        *(f"loss_genvis_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")),
        "loss_genvis_sim",
    }


def test_each_aux_layer_has_its_own_assignment_chain() -> None:
    """Aux layer 0 predicts A with query 2 (the final layer with query 1): its chain binds A to query 2 for
    the whole sequence, the final layer's keeps query 1, and each CE follows its own binding."""
    targets = [clip_targets(VISIBLE, labels=[0, 1, 2])]
    out = sequence_outputs([[p] for p in PREDS])
    alt = [{2: (A, 6.0), 3: (B, 6.0)}, {0: (C, 4.0), 3: (B, 6.0)}, {0: (C, 6.0), 1: (A, 6.0), 3: (B, 6.0)}]
    for step, preds in zip(out["steps"], alt):
        step["aux_outputs"][0] = layer([preds], 1, 1)
    # Step 2: both layers predict A with query 1, but aux 0 keeps A on query 2.
    alt_expected = [{2: LABELS[A], 3: LABELS[B]}, EXPECTED[1], {0: LABELS[C], 2: LABELS[A], 3: LABELS[B]}]
    losses = criterion()(out, targets)
    final = sum(expected_ce(s["pred_logits"], e) for s, e in zip(out["steps"], EXPECTED))
    aux0 = sum(expected_ce(s["aux_outputs"][0]["pred_logits"], e) for s, e in zip(out["steps"], alt_expected))
    aux1 = sum(expected_ce(s["aux_outputs"][1]["pred_logits"], e) for s, e in zip(out["steps"], EXPECTED))
    torch.testing.assert_close(losses["loss_genvis_ce"], final)
    torch.testing.assert_close(losses["loss_genvis_ce_0"], aux0)
    torch.testing.assert_close(losses["loss_genvis_ce_1"], aux1)


def test_weight_dict_keys_are_the_loss_keys() -> None:
    wd = grattvis_weight_dict(gate_weight=0.0)
    assert wd == {
        "loss_genvis_ce": 2.0, "loss_genvis_mask": 5.0, "loss_genvis_dice": 5.0, "loss_genvis_sim": 0.5,
        "loss_genvis_ce_0": 2.0, "loss_genvis_mask_0": 5.0, "loss_genvis_dice_0": 5.0,
        "loss_genvis_ce_1": 2.0, "loss_genvis_mask_1": 5.0, "loss_genvis_dice_1": 5.0,
    }  # fmt: skip
    wd = grattvis_weight_dict(sim_weight=0.0, gate_weight=1.5, num_aux=1)
    assert wd["loss_genvis_gate"] == 1.5 and wd["loss_genvis_gate_0"] == 1.5
    assert "loss_genvis_sim" not in wd and "loss_genvis_ce_1" not in wd


def test_mask_loss_normalised_by_valid_instances_times_copies() -> None:
    """Logit 0 everywhere gives BCE log 2 at every point, whatever the points: the mask loss of a step is
    (valid pairs) x log 2 / num_masks, and num_masks counts the instances *valid in the step* x L."""
    targets = [clip_targets([[A, B], [B]], labels=[0, 1])]  # A is invisible in step 1
    out = sequence_outputs([[PREDS[0]] * 2] * 2, copies=2)
    for step in out["steps"]:
        for lay in [step, *step["aux_outputs"]]:
            with torch.no_grad():
                lay["pred_masks"].zero_()
    losses = criterion()(out, targets)
    # Step 0: 2 instances x 2 copies / (2 x 2); step 1: 1 x 2 / (1 x 2). Counting A in step 1 gives 1.5 log 2.
    torch.testing.assert_close(losses["loss_genvis_mask"], torch.tensor(2 * math.log(2.0)))
    torch.testing.assert_close(losses["loss_genvis_mask_1"], torch.tensor(2 * math.log(2.0)))


def test_mask_loss_concatenates_the_frames_of_a_clip_per_instance() -> None:
    """W = 2: an instance visible only in the second frame of the clip; the prediction is certain and right
    (logit -50, no pixel) in the first frame and logit 0 in the second. The per-instance mean over 2P points
    is log(2)/2 (a per-frame sum would give log 2)."""
    t = clip_targets([[], [A]], labels=[0])
    out = sequence_outputs([[PREDS[0]]])
    out["window"] = 2
    for lay in [out["steps"][0], *out["steps"][0]["aux_outputs"]]:
        masks = torch.zeros(1, 1, QUERIES, 2, SIZE, SIZE)
        masks[:, :, :, 0] = -50.0
        lay["pred_masks"] = masks.requires_grad_()
    out["frame_outputs"] = [{k: torch.cat([v, v]) for k, v in out["frame_outputs"][0].items()}]
    out["steps"][0]["pred_fq_embed"] = torch.randn(1, 1, 2, FRAME_QUERIES, DIM)
    losses = criterion()(out, [t])
    torch.testing.assert_close(losses["loss_genvis_mask"], torch.tensor(math.log(2.0) / 2))


def test_a_perfect_prediction_gives_near_zero_mask_and_dice() -> None:
    """A large square at 128 x 128, predicted by logits +-10 at the same size: only the one-pixel band at its
    boundary (where bilinear sampling blurs both, and where importance sampling puts most points) costs
    anything (measured 0.04-0.05 BCE, 0.02 dice); a prediction 16 pixels off costs 10-25 times more."""
    size = 128
    t = torch.zeros(1, 1, size, size, dtype=torch.bool)
    t[0, 0, 16:80, 32:112] = True
    targets = [clip_targets([[A]], labels=[0])]
    targets[0].masks = t
    targets[0].valid = t.flatten(2).any(-1)

    def run(pred_mask: torch.Tensor) -> dict:
        out = sequence_outputs([[{0: (A, 6.0)}]])
        for lay in [out["steps"][0], *out["steps"][0]["aux_outputs"]]:
            masks = torch.full((1, 1, QUERIES, 1, size, size), -10.0)
            masks[0, 0, 0, 0] = pred_mask
            lay["pred_masks"] = masks
        out["frame_outputs"][0]["pred_masks"] = torch.randn(1, FRAME_QUERIES, 8, 8)
        torch.manual_seed(0)
        return criterion(num_points=2000)(out, targets)

    good = run(torch.where(t[0, 0], 10.0, -10.0))
    bad = run(torch.where(t[0, 0].roll(16, dims=1), 10.0, -10.0))
    for suffix in ("", "_0", "_1"):
        assert good["loss_genvis_mask" + suffix] < 0.08 and good["loss_genvis_dice" + suffix] < 0.04
        assert bad["loss_genvis_mask" + suffix] > 10 * good["loss_genvis_mask" + suffix]
        assert bad["loss_genvis_dice" + suffix] > 5 * good["loss_genvis_dice" + suffix]


def bce(x: float, y: float) -> float:
    """BCE-with-logits of one logit, by hand."""
    return max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))


def test_sim_loss_on_a_tiny_case_by_hand() -> None:
    """One video, two visible instances, L = 2 copies, W = 1. Frame query 0 predicts A and frame query 2
    predicts B in both detector layers; the clip queries 1 (A) and 3 (B) are matched. The loss averages the
    BCE of all dot products *within* a copy: 2 copies x 4 x 4 pairs; cross-copy pairs do not count."""
    targets = [clip_targets([[A, B]], labels=[0, 1])]
    out = sequence_outputs([[PREDS[0]] * 2], copies=2)
    frame_logits = torch.full((1, FRAME_QUERIES, NUM_CLASSES + 1), -4.0)
    frame_masks = torch.full((1, FRAME_QUERIES, SIZE, SIZE), -8.0)
    for q, inst in [(0, A), (2, B)]:
        frame_logits[0, q, LABELS[inst]] = 6.0
        frame_masks[0, q, region_mask(inst)] = 8.0
    out["frame_outputs"] = [{"pred_logits": frame_logits, "pred_masks": frame_masks}] * 2
    g = torch.Generator().manual_seed(4)
    fq = torch.randint(-2, 3, (2, 1, 1, FRAME_QUERIES, 2), generator=g).float()
    cq = torch.randint(-2, 3, (2, 1, QUERIES, 2), generator=g).float()
    out["steps"][0]["pred_fq_embed"], out["steps"][0]["pred_cq_embed"] = fq, cq
    losses = criterion()(out, targets)

    total, pairs = 0.0, 0
    for l in range(2):
        emb = [fq[l, 0, 0, 0], fq[l, 0, 0, 2], cq[l, 0, 1], cq[l, 0, 3]]
        inst = [A, B, A, B]
        for i in range(4):
            for j in range(4):
                total += bce(float(emb[i] @ emb[j]), float(inst[i] == inst[j]))
                pairs += 1
    torch.testing.assert_close(losses["loss_genvis_sim"], torch.tensor(total / pairs), rtol=1e-5, atol=1e-6)
    assert "loss_genvis_sim_0" not in losses

    # Without the clip queries only the frame embeddings count.
    frame_only = criterion(sim_use_clip=False)(out, targets)["loss_genvis_sim"]
    total = sum(
        bce(float(fq[l, 0, 0, i] @ fq[l, 0, 0, j]), float(i == j))
        for l in range(2)
        for i in (0, 2)
        for j in (0, 2)
    )
    torch.testing.assert_close(frame_only, torch.tensor(total / 8), rtol=1e-5, atol=1e-6)


def test_gate_loss_only_with_a_positive_weight_and_on_the_soft_values() -> None:
    targets = [clip_targets(VISIBLE, labels=[0, 1, 2])]
    out = sequence_outputs([[p] for p in PREDS])
    assert not any("gate" in k for k in criterion(gate_weight=0.0)(out, targets))
    losses = criterion(gate_weight=1.0)(out, targets)
    expected = {"": 0.0, "_0": 0.0, "_1": 0.0}
    for step, bound in zip(out["steps"], EXPECTED):
        target = torch.zeros(1, QUERIES)
        target[0, list(bound)] = 1.0
        for suffix, gate in zip(["_0", "_1", ""], step["soft_gates"]):  # the last gate is the final layer's
            expected[suffix] += F.binary_cross_entropy_with_logits(gate.detach(), target)
    for suffix, value in expected.items():
        torch.testing.assert_close(losses["loss_genvis_gate" + suffix], value)
    del out["steps"][0]["soft_gates"]
    with pytest.raises(KeyError, match="GATED_PROP"):
        criterion(gate_weight=1.0)(out, targets)


def test_gradients_reach_every_step_and_layer() -> None:
    targets = [clip_targets(VISIBLE, labels=[0, 1, 2]), clip_targets([[A], [A], [A]], labels=[0])]
    preds = [[p, {2: (A, 6.0)}] * 2 for p in PREDS]  # 2 copies x 2 videos, n = l*B + b
    out = sequence_outputs(preds, copies=2, videos=2)
    crit = criterion(gate_weight=0.5)
    losses = crit(out, targets)
    assert set(losses) == set(crit.weight_dict)
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    total.backward()
    for c, step in enumerate(out["steps"]):
        for key in ("pred_logits", "pred_masks", "pred_cq_embed", "pred_fq_embed"):
            assert step[key].grad is not None and step[key].grad.abs().sum() > 0, (c, key)
        for i, aux in enumerate(step["aux_outputs"]):
            for key in ("pred_logits", "pred_masks"):
                assert aux[key].grad.abs().sum() > 0, (c, i, key)
            assert aux["pred_cq_embed"].grad is None  # no similarity loss for aux layers
        assert all(g.grad.abs().sum() > 0 for g in step["soft_gates"])


def test_a_step_without_visible_instances_and_clear_errors() -> None:
    targets = [clip_targets([[A], []], labels=[0])]  # nothing visible in step 1: num_masks is clamped to 1
    out = sequence_outputs([[PREDS[0]], [{}]])
    losses = criterion()(out, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    out["steps"] = out["steps"][:1]
    with pytest.raises(ValueError, match="1 steps in the outputs, 2 clips"):
        criterion()(out, targets)
    with pytest.raises(ValueError, match="frame_matcher"):
        GRAttVISCriterion(NUM_CLASSES, UnifiedVideoLabelAssignment(), None, sim_weight=0.5)


def test_contract_sized_outputs_through_the_factory() -> None:
    """The shapes of a training step (L = 3 copies, B = 2 videos, T = 5, cQ = fQ = 100, C = 256, 2 aux
    layers) with random predictions, one video without any instance: every key finite, gradients flow."""
    copies, videos, frames, q, k, dim = 3, 2, 5, 100, 25, 256
    h, w = 8, 12
    g = torch.Generator().manual_seed(5)
    masks = torch.rand(6, frames, 4 * h, 4 * w, generator=g) > 0.7
    masks[:, :, 20:] = False  # padding rows
    masks[0, :2] = False  # instance 0 appears at frame 2
    masks[1, 3] = False  # instance 1 disappears at frame 3
    full = ClipTargets(
        labels=torch.randint(0, k, (6,), generator=g),
        ids=torch.arange(6) + 7,
        masks=masks,
        boxes=torch.zeros(6, frames, 4),
        valid=torch.ones(6, frames, dtype=torch.bool),
    )
    empty = ClipTargets(
        labels=torch.zeros(0, dtype=torch.int64),
        ids=torch.zeros(0, dtype=torch.int64),
        masks=torch.zeros(0, frames, 4 * h, 4 * w, dtype=torch.bool),
        boxes=torch.zeros(0, frames, 4),
        valid=torch.zeros(0, frames, dtype=torch.bool),
    )

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_()

    def lay() -> dict:
        return {
            "pred_logits": leaf(copies, videos, q, k + 1),
            "pred_masks": leaf(copies, videos, q, 1, h, w),
            "pred_cq_embed": leaf(copies, videos, q, dim),
            "pred_mask_embed": leaf(copies, videos, q, dim),
        }

    steps = []
    for _ in range(frames):
        step = lay()
        step["pred_fq_embed"] = leaf(copies, videos, 1, q, dim) * 0.05
        step["aux_outputs"] = [lay(), lay()]
        step["soft_gates"] = [torch.rand(copies * videos, q, generator=g) for _ in range(3)]
        steps.append(step)
    frame_outputs = [
        {
            "pred_logits": torch.randn(videos * frames, q, k + 1),
            "pred_masks": torch.randn(videos * frames, q, h, w),
        }
        for _ in range(copies)
    ]
    outputs = {"steps": steps, "frame_outputs": frame_outputs, "num_layers_copies": copies, "window": 1}
    crit = grattvis_criterion(k, num_points=64, gate_weight=1.0)
    losses = crit(outputs, [full, empty])
    assert set(losses) == set(crit.weight_dict)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(crit.weight_dict[key] * v for key, v in losses.items()).backward()
    assert all(s["pred_masks"].grad.abs().sum() > 0 for s in steps)
