"""SetCriterion: hand-built loss values, index reuse, mask-query layout, aux layers, weights (devis §3.5)."""

import math

import pytest
import torch
import torch.distributed as dist
from yacs.config import CfgNode as CN

from vidseg.models.devis.build import build_criterion
from vidseg.models.devis.criterion import build_weight_dict
from vidseg.models.devis.criterion import focal_set_criterion as SetCriterion
from vidseg.models.set_prediction.losses import dice_loss, sigmoid_focal_loss, sigmoid_focal_loss_elementwise
from vidseg.models.set_prediction.matcher import HungarianMatcher


class _NoMatcher:
    def __call__(self, outputs, targets):
        raise AssertionError("the criterion must reuse outputs['indices']")


def _weights(**kw):
    base = dict(class_coef=2.0, bbox_coef=5.0, giou_coef=2.0, mask_coef=1.0, dice_coef=1.0)
    base.update(kw)
    return build_weight_dict(**base)


def test_aux_loss_weighting_table_matches_devis_spec():
    w = _weights(aux_loss_weighting=True)
    expected = {
        "loss_ce": 1.0, "loss_bbox": 2.5, "loss_giou": 1.0,
        "loss_ce_0": 2 / 30, "loss_bbox_0": 5 / 30, "loss_giou_0": 2 / 30,
        "loss_ce_1": 4 / 30, "loss_bbox_1": 10 / 30, "loss_giou_1": 4 / 30,
        "loss_ce_2": 0.2, "loss_bbox_2": 0.5, "loss_giou_2": 0.2,
        "loss_ce_3": 8 / 30, "loss_bbox_3": 20 / 30, "loss_giou_3": 8 / 30,
        "loss_ce_4": 10 / 30, "loss_bbox_4": 25 / 30, "loss_giou_4": 10 / 30,
        "loss_mask": 1.0, "loss_dice": 1.0, "loss_mask_2": 1.0, "loss_dice_2": 1.0,
    }  # fmt: skip
    assert set(w) == set(expected)
    for k, v in expected.items():
        assert w[k] == pytest.approx(v, abs=1e-12), k
    # the rounded values printed in the spec
    assert [round(w[f"loss_ce_{i}"], 4) for i in range(5)] == [0.0667, 0.1333, 0.2, 0.2667, 0.3333]
    assert [round(w[f"loss_bbox_{i}"], 4) for i in range(5)] == [0.1667, 0.3333, 0.5, 0.6667, 0.8333]


def test_weights_without_weighting_and_coco_stage():
    w = _weights(mask_coef=8.0, dice_coef=8.0)
    assert all(w[f"loss_ce_{i}"] == 2.0 and w[f"loss_bbox_{i}"] == 5.0 for i in range(5))
    assert w["loss_mask"] == w["loss_dice"] == w["loss_mask_2"] == 8.0
    assert "loss_mask_0" not in w
    assert set(_weights(aux_loss=False, mask_on=False)) == {"loss_ce", "loss_bbox", "loss_giou"}
    with pytest.raises(ValueError, match="6 decoder layers"):
        _weights(aux_loss_weighting=True, num_decoder_layers=3)


def _hand_case():
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 2.0], [0.5, -0.5]]])  # B=1, Q=3, K=2
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]]])
    pred_masks = torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]], [[9.0, 9.0], [9.0, 9.0]]]])  # [1, 2 sel, 2, 2]
    targets = [
        {
            "labels": torch.tensor([1]),
            "boxes": torch.tensor([[0.6, 0.5, 0.2, 0.2]]),
            "masks": torch.tensor([[[True, False], [False, True]]]),
        }
    ]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    outputs = {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": pred_masks, "indices": indices}
    return outputs, targets


def test_loss_values_on_hand_built_case():
    outputs, targets = _hand_case()
    crit = SetCriterion(2, _NoMatcher(), _weights(), mask_aux_layers=())
    losses = crit(outputs, targets)
    # class: only (query 0, class 1) is positive; num_boxes = 1
    onehot = torch.zeros(1, 3, 2)
    onehot[0, 0, 1] = 1
    ce = sigmoid_focal_loss_elementwise(outputs["pred_logits"], onehot).sum()
    assert losses["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(0.1, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(2 / 3, abs=1e-6)
    src = torch.tensor([[0.0, 1.0, -1.0, 2.0]])
    tgt = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert losses["loss_mask"].item() == pytest.approx(sigmoid_focal_loss(src, tgt, 1).item(), rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(dice_loss(src, tgt, 1).item(), rel=1e-6)
    # query 0 predicts class 1 (argmax) -> no class error
    assert losses["class_error"].item() == 0.0
    total = crit.weighted_total(losses)
    expected = sum(
        crit.weight_dict[k] * losses[k]
        for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_padded_mask_entries_are_ignored_and_flat_layout_agrees():
    outputs, targets = _hand_case()
    crit = SetCriterion(2, _NoMatcher(), _weights(), mask_aux_layers=())
    ref = crit(outputs, targets)
    outputs["pred_masks"] = outputs["pred_masks"].clone()
    outputs["pred_masks"][0, 1] = -50.0
    assert crit(outputs, targets)["loss_mask"].item() == ref["loss_mask"].item()
    outputs["pred_masks"] = outputs["pred_masks"][0, :1]  # flat [M, h, w]
    assert crit(outputs, targets)["loss_dice"].item() == pytest.approx(ref["loss_dice"].item())


def test_masks_are_upsampled_to_the_target_size():
    outputs, targets = _hand_case()
    targets[0]["masks"] = torch.ones(1, 8, 8, dtype=torch.bool)
    outputs["pred_masks"] = torch.full((1, 1, 2, 2), 30.0)
    losses = SetCriterion(2, _NoMatcher(), _weights(), mask_aux_layers=())(outputs, targets)
    assert losses["loss_dice"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_mask"].item() < 1e-10


def _full_outputs(bs=2, q=6, k=3, h=4, w=4, num_dec=6, mask_layers=(2,)):
    def layer(with_masks):
        out = {
            "pred_logits": torch.randn(bs, q, k, requires_grad=True),
            "pred_boxes": torch.rand(bs, q, 4) * 0.5 + 0.25,
        }
        if with_masks:
            out["pred_masks"] = torch.randn(
                bs, q, h, w, requires_grad=True
            )  # all queries: superset of matched
        return out

    outputs = layer(True)
    outputs["aux_outputs"] = [layer(i in mask_layers) for i in range(num_dec - 1)]
    targets = [
        {
            "labels": torch.tensor([0, 2]),
            "boxes": torch.rand(2, 4) * 0.3 + 0.3,
            "masks": torch.rand(2, 16, 16) > 0.5,
        },
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "boxes": torch.zeros(0, 4),
            "masks": torch.zeros(0, 16, 16),
        },
    ]
    return outputs, targets


def test_keys_aux_layers_and_backward_with_an_empty_image():
    outputs, targets = _full_outputs()
    crit = SetCriterion(3, HungarianMatcher(), _weights(aux_loss_weighting=True), mask_aux_layers=(2,))
    # pred_masks here cover every query; give the criterion the query-ordered layout it documents
    for out in [outputs, *outputs["aux_outputs"]]:
        if "pred_masks" in out:
            idx = crit.matcher(out, targets)
            out["indices"] = idx
            out["pred_masks"] = torch.stack(
                [
                    torch.cat(
                        [out["pred_masks"][b, i[0]], out["pred_masks"][b, :1].expand(2 - len(i[0]), -1, -1)]
                    )
                    for b, i in enumerate(idx)
                ]
            )
    losses = crit(outputs, targets)
    expected = {
        "loss_ce",
        "class_error",
        "loss_bbox",
        "loss_giou",
        "loss_mask",
        "loss_dice",
        "loss_mask_2",
        "loss_dice_2",
    }
    expected |= {f"{n}_{i}" for n in ("loss_ce", "loss_bbox", "loss_giou") for i in range(5)}
    assert set(losses) == expected
    assert set(crit.weight_dict) == expected - {"class_error"}
    assert all(torch.isfinite(v) for v in losses.values())
    crit.weighted_total(losses).backward()
    assert outputs["pred_logits"].grad is not None and outputs["pred_logits"].grad.abs().sum() > 0


def test_missing_aux_masks_and_missing_keys_are_reported():
    outputs, targets = _full_outputs(mask_layers=())
    crit = SetCriterion(3, HungarianMatcher(), _weights(), mask_aux_layers=(2,))
    with pytest.raises(KeyError, match="aux layer 2"):
        crit(outputs, targets)
    with pytest.raises(KeyError, match="pred_boxes"):
        crit({"pred_logits": outputs["pred_logits"]}, targets)
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(3, HungarianMatcher(), {}, losses=("labels", "foo"))


def test_clip_indices_with_valid_flags():
    # DeVIS-style matching: one instance over T=2 frames, visible only in frame 1.
    logits = torch.zeros(1, 4, 2)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 4])
    targets = [
        {
            "labels": torch.tensor([1, 1]),
            "boxes": torch.tensor([[0.5, 0.5, 1e-6, 1e-6], [0.5, 0.5, 0.2, 0.2]]),
        }
    ]
    indices = [(torch.tensor([1, 3]), torch.tensor([0, 1]), torch.tensor([False, True]))]
    crit = SetCriterion(2, _NoMatcher(), _weights(), losses=("labels", "boxes"), mask_aux_layers=())
    losses = crit({"pred_logits": logits, "pred_boxes": boxes, "indices": indices}, targets)
    num_boxes = 2.0
    # one positive (query 3, class 1); 7 negatives at logit 0
    ce = (1 * 0.25 * 0.25 * math.log(2) + 7 * 0.75 * 0.25 * math.log(2)) / num_boxes
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-6)
    # the invalid frame is still box-supervised: |0.2 - 1e-6| * 2 coords
    assert losses["loss_bbox"].item() == pytest.approx((0.2 - 1e-6) * 2 / num_boxes, rel=1e-5)
    # no valid frame at all: no box loss, but a connected zero
    indices = [(torch.tensor([1, 3]), torch.tensor([0, 1]), torch.tensor([False, False]))]
    boxes.requires_grad_(True)
    losses = crit({"pred_logits": logits, "pred_boxes": boxes, "indices": indices}, targets)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_bbox"].requires_grad


def _cfg(**loss):
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.TRANSFORMER = CN({"DECODER_LAYERS": 6})
    cfg.MODEL.LOSS = CN(
        {
            "AUX_LOSS": True, "AUX_LOSS_WEIGHTING": False, "FOCAL_LOSS": True, "MASK_AUX_LOSS": [2],
            "SEGM_MASK_COEF": 8.0, "SEGM_DICE_COEF": 8.0, "BBX_L1_COEF": 5.0, "BBX_GIOU_COEF": 2.0,
            "CLASS_COEF": 2.0, "FOCAL_ALPHA": 0.25, "EOS": 0.1,
        }
    )  # fmt: skip
    cfg.MODEL.LOSS.update(loss)
    cfg.MODEL.MATCHER = CN(
        {"CLASS_COST": 2.0, "BBX_L1_COST": 5.0, "BBX_GIOU_COST": 2.0, "USE_SUM_L1_DISTANCE": False}
    )
    return cfg


def test_build_criterion_from_config():
    crit = build_criterion(_cfg(), num_classes=91)
    assert crit.terms["labels"].num_classes == 91 and crit.losses == ["labels", "boxes", "masks"]
    assert crit.weight_dict["loss_mask_2"] == 8.0
    assert crit.aux_losses(2) == ["labels", "boxes", "masks"] and crit.aux_losses(1) == ["labels", "boxes"]
    assert crit.matcher.cost_class == 2.0 and crit.matcher.cost_bbox == 5.0
    assert build_criterion(_cfg(AUX_LOSS_WEIGHTING=True), 40).weight_dict["loss_ce"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="MASK_AUX_LOSS"):
        build_criterion(_cfg(MASK_AUX_LOSS=[5]), 91)
    with pytest.raises(ValueError, match="FOCAL_LOSS"):
        build_criterion(_cfg(FOCAL_LOSS=False), 91)


def test_num_boxes_all_reduce_single_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        outputs, targets = _hand_case()
        crit = SetCriterion(2, _NoMatcher(), _weights(), mask_aux_layers=())
        assert crit.get_num_boxes(targets + targets, torch.device("cpu")) == 2.0
        assert crit.get_num_boxes([{"labels": torch.zeros(0)}], torch.device("cpu")) == 1.0
        assert torch.isfinite(crit(outputs, targets)["loss_ce"])
    finally:
        dist.destroy_process_group()


def test_clip_matcher_with_the_criterion_and_masks():
    # DeVIS layout: B=1 clip, T=2 frames x Nq=3 slots, one instance visible in frame 0 only.
    from vidseg.models.devis.clip_matcher import ClipHungarianMatcher

    t, nq = 2, 3
    targets = [
        {
            "labels": torch.tensor([1, 1]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 1e-6, 1e-6]]),
            "valid": torch.tensor([True, False]),
            "masks": torch.stack([torch.ones(8, 8), torch.zeros(8, 8)]).bool(),
        }
    ]
    outputs = {"pred_logits": torch.randn(1, t * nq, 2), "pred_boxes": torch.rand(1, t * nq, 4) * 0.4 + 0.3}
    matcher = ClipHungarianMatcher(num_frames=t)
    indices = matcher(outputs, targets)
    outputs["indices"] = indices
    outputs["pred_masks"] = torch.full((1, t, 2, 2), 20.0, requires_grad=True)  # [B, N*T, h, w]
    crit = SetCriterion(2, matcher, _weights(), mask_aux_layers=())
    losses = crit(outputs, targets)
    # frame 0 (full mask predicted full) has ~0 dice; frame 1 (empty GT, predicted full) has dice 64/65
    assert losses["loss_dice"].item() == pytest.approx((0.0 + 1 - 1 / 65) / 2, abs=1e-4)
    losses["loss_mask"].backward()
    assert outputs["pred_masks"].grad.abs().sum() > 0
