"""DeformableDETR / DeformableDETRSegm behaviour on tiny CPU inputs."""

import math

import pytest
import torch
from ddetr_synth import make_batch

from vidseg.models import load_config
from vidseg.models.deformable_detr.transformer import inverse_sigmoid
from vidseg.models.devis.build import build_deformable_detr_segm
from vidseg.models.devis.build import build_image_stage as build
from vidseg.models.devis.targets import image_targets_from_batch, image_targets_from_clip
from vidseg.structures.clip_batch import ClipTargets

TINY = "quickstart/deformable_mask_head_tiny.yaml"


def tiny_cfg(*opts):
    return load_config(TINY, ["MODEL.NUM_CLASSES", "3", *opts])


@pytest.mark.parametrize("levels", [1, 3, 4])
def test_ddetr_forward_backward_levels(levels):
    cfg = tiny_cfg("MODEL.NUM_FEATURE_LEVELS", str(levels), "MODEL.NUM_QUERIES", "8")
    bundle = build(cfg)
    model, criterion = bundle.model, bundle.criterion
    model.train()
    batch = make_batch(2, (96, 128), pad_right=32)
    out = model(batch)
    assert out["pred_logits"].shape == (2, 8, 3)
    assert out["pred_boxes"].shape == (2, 8, 4)
    assert len(out["aux_outputs"]) == 1
    n_max = max(len(t) for t in batch.targets)
    assert out["pred_masks"].shape == (2, n_max, 24, 32)
    assert "pred_masks" in out["aux_outputs"][0] and "indices" in out["aux_outputs"][0]
    losses = criterion(out, batch.targets)
    for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_mask_0", "loss_ce_0"):
        assert torch.isfinite(losses[k]), k
    total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


def test_ddetr_head_initialisation():
    model = build_deformable_detr_segm(tiny_cfg(), 3)
    d = model.def_detr
    for ce in d.class_embed:
        assert torch.allclose(ce.bias, torch.full((3,), -math.log(99.0)))
    for i, be in enumerate(d.bbox_embed):
        assert torch.all(be.layers[-1].weight == 0)
        expect = torch.tensor([0.0, 0.0, -2.0, -2.0]) if i == 0 else torch.zeros(4)
        assert torch.equal(be.layers[-1].bias.detach(), expect)
    assert d.bbox_embed[0] is not d.bbox_embed[1]
    assert d.transformer.decoder.bbox_embed is d.bbox_embed
    for proj in d.input_proj:
        assert torch.all(proj[0].bias == 0)
    # At init every layer's boxes are its reference refined by zero deltas: layer 0 wh = sigmoid(-2).
    model.eval()
    batch = make_batch(1, (64, 64))
    out = model(batch.frames[:, 0], batch.pad_mask[:, 0])
    assert torch.allclose(out["aux_outputs"][0]["pred_boxes"][..., 2:], torch.sigmoid(torch.tensor(-2.0)))


@pytest.mark.parametrize("grad_prop", [False, True])
def test_ddetr_bbx_gradient_prop_controls_detach(grad_prop):
    cfg = tiny_cfg("MODEL.BBX_GRADIENT_PROP", str(grad_prop), "MODEL.MASK_ON", "False")
    model = build_deformable_detr_segm(cfg, 3).def_detr
    # Non-zero deltas so that a gradient path would carry signal.
    torch.nn.init.normal_(model.bbox_embed[0].layers[-1].weight, std=0.1)
    batch = make_batch(1, (64, 64))
    state = model.forward_state(batch.frames[:, 0], batch.pad_mask[:, 0])
    t = state.transformer
    # Final boxes follow the refinement rule from the previous layer's reference.
    expect = (model.bbox_embed[1](t.hs[1]) + inverse_sigmoid(t.inter_references[0])).sigmoid()
    assert torch.allclose(state.outputs["pred_boxes"], expect, atol=1e-6)
    state.outputs["pred_boxes"].sum().backward()
    g = model.bbox_embed[0].layers[-1].weight.grad
    reached = g is not None and g.abs().sum() > 0
    assert reached == grad_prop


def test_ddetr_eval_outputs_topk_masks_and_postprocess():
    bundle = build(tiny_cfg())
    batch = make_batch(2, (96, 128), pad_right=32)
    results = bundle.inference(bundle.model, batch)
    assert len(results) == 2
    k = bundle.model.num_out
    for r, meta in zip(results, batch.meta):
        assert r["scores"].shape == (k,) and r["labels"].max() < 3
        assert r["masks"].shape == (k, *meta["orig_size"])
        assert (r["boxes"][:, 2] <= meta["orig_size"][1]).all()
    bundle.model.eval()
    with torch.no_grad():
        out = bundle.model(batch)
    assert out["pred_masks"].shape == (2, k, 24, 32)
    q = out["topk"]["query_idx"]
    scores = out["pred_logits"].sigmoid().gather(1, q[..., None].expand(-1, -1, 3))
    assert torch.allclose(scores.gather(2, out["topk"]["labels"][..., None])[..., 0], out["topk"]["scores"])


def test_ddetr_param_groups_follow_devis_rules():
    cfg = load_config(
        TINY,
        [
            "MODEL.NUM_CLASSES",
            "3",
            "SOLVER.BASE_LR",
            "0.001",
            "SOLVER.LR_BACKBONE",
            "0.0001",
            "SOLVER.LR_MASK_HEAD_MULT",
            "10",
            "SOLVER.BACKBONE_NAMES",
            "['backbone.0', 'input_proj']",
            "SOLVER.FROZEN_PARAMS",
            "['class_embed']",
        ],
    )
    bundle = build(cfg)
    # The engine freezes SOLVER.FROZEN_PARAMS (its one owner) before it asks for the groups.
    from vidseg.engine.optim import freeze_parameters

    freeze_parameters(bundle.model, cfg.SOLVER.FROZEN_PARAMS)
    groups = {g["name"]: g for g in bundle.param_groups(bundle.model)}
    names = {id(p): n for n, p in bundle.model.named_parameters()}
    assert set(groups) == {"base", "backbone", "linear_proj", "mask_head"}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["linear_proj"]["lr"] == pytest.approx(1e-4)
    assert groups["mask_head"]["lr"] == pytest.approx(1e-2)
    assert all(
        "backbone.0" in names[id(p)] or "input_proj" in names[id(p)] for p in groups["backbone"]["params"]
    )
    lp = {names[id(p)] for p in groups["linear_proj"]["params"]}
    assert "def_detr.transformer.reference_points.weight" in lp
    assert any("cross_attn.sampling_offsets" in n for n in lp) and not any(
        "attention_weights" in n for n in lp
    )
    assert all(
        n.startswith(("bbox_attention", "mask_head"))
        for n in (names[id(p)] for p in groups["mask_head"]["params"])
    )
    everything = [p for g in groups.values() for p in g["params"]]
    assert len(everything) == len({id(p) for p in everything})  # no parameter in two groups
    assert not any("class_embed" in names[id(p)] for p in everything)  # frozen by SOLVER.FROZEN_PARAMS
    # Stem and layer1 of the ResNet are frozen by the backbone itself.
    assert not any("body.layer1." in names[id(p)] or "body.conv1" in names[id(p)] for p in everything)


def test_ddetr_image_targets_drop_invisible_and_crowd():
    t = ClipTargets(
        labels=torch.tensor([0, 1, 2]),
        ids=torch.arange(3),
        masks=torch.ones(3, 1, 4, 4, dtype=torch.bool),
        boxes=torch.rand(3, 1, 4),
        valid=torch.tensor([[True], [False], [True]]),
        iscrowd=torch.tensor([False, False, True]),
    )
    out = image_targets_from_clip(t)
    assert out["labels"].tolist() == [0]
    assert out["boxes"].shape == (1, 4) and out["masks"].shape == (1, 4, 4)
    with pytest.raises(ValueError, match="ClipTargets.boxes"):
        image_targets_from_clip(ClipTargets(t.labels, t.ids, t.masks, torch.rand(3, 4), t.valid))
    assert len(image_targets_from_batch(make_batch(3))) == 3


def test_ddetr_config_errors_are_clear():
    with pytest.raises(ValueError, match="MASK_AUX_LOSS"):
        build_deformable_detr_segm(tiny_cfg("MODEL.LOSS.MASK_AUX_LOSS", "[3]"), 3)
    with pytest.raises(ValueError, match="num_feature_levels"):
        build_deformable_detr_segm(tiny_cfg("MODEL.NUM_FEATURE_LEVELS", "2"), 3)
    with pytest.raises(Exception, match="MODEL.TRANSFORMER.ENC_N_POINT"):
        tiny_cfg("MODEL.TRANSFORMER.ENC_N_POINT", "3")
    model = build_deformable_detr_segm(tiny_cfg(), 3)
    with pytest.raises(ValueError, match="T=1"):
        b = make_batch(1)
        b.frames = b.frames.repeat(1, 2, 1, 1, 1)
        model(b)
