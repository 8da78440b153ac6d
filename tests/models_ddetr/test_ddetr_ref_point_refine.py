"""MODEL.WITH_REF_POINT_REFINE: xy-only refinement of the 2-d reference points (DeVIS, exclusive with box
refinement)."""

import pytest
import torch
from ddetr_synth import make_batch

from vidseg.models import load_config
from vidseg.models.deformable_detr.detr import DeformableDETR
from vidseg.models.deformable_detr.transformer import inverse_sigmoid
from vidseg.models.devis.build import build_deformable_detr_segm
from vidseg.models.devis.build import build_image_stage as build

TINY = "quickstart/deformable_mask_head_tiny.yaml"


def ref_cfg(*opts):
    return load_config(
        TINY,
        ["MODEL.NUM_CLASSES", "3", "MODEL.WITH_BBX_REFINE", "False", "MODEL.WITH_REF_POINT_REFINE", "True"]
        + list(opts),
    )


def _perturb(model: DeformableDETR, std: float = 0.1) -> None:
    # The last layers are zero-initialised; non-zero deltas make the refinement visible.
    torch.manual_seed(1)
    for mlp in model.transformer.decoder.ref_point_embed:
        torch.nn.init.normal_(mlp.layers[-1].weight, std=std)
        torch.nn.init.normal_(mlp.layers[-1].bias, std=std)


def test_ddetr_ref_point_refine_modules_and_official_key_names():
    model = build_deformable_detr_segm(ref_cfg(), 3).def_detr
    dec = model.transformer.decoder
    assert dec.bbox_embed is None and dec.ref_point_embed is not None
    assert len(dec.ref_point_embed) == dec.num_layers
    for mlp in dec.ref_point_embed:
        assert mlp.layers[-1].out_features == 2
        assert torch.all(mlp.layers[-1].weight == 0) and torch.all(mlp.layers[-1].bias == 0)
    assert dec.ref_point_embed[0] is not dec.ref_point_embed[1]
    keys = model.state_dict().keys()
    assert "transformer.decoder.ref_point_embed.1.layers.2.weight" in keys
    assert not any(k.startswith("ref_point_embed") for k in keys)  # only under the decoder, as officially
    # Without box refinement the class/box heads are shared across layers.
    assert model.bbox_embed[0] is model.bbox_embed[1]


def test_ddetr_ref_points_move_in_xy_only_and_boxes_follow():
    model = build_deformable_detr_segm(ref_cfg("MODEL.MASK_ON", "False"), 3).def_detr.eval()
    batch = make_batch(1, (64, 64))
    frames, pad = batch.frames[:, 0], batch.pad_mask[:, 0]
    with torch.no_grad():
        t0 = model.forward_state(frames, pad).transformer
    # Zero-initialised deltas: the reference point is the same after every layer.
    assert t0.inter_references.shape[-1] == 2
    for lvl in range(t0.inter_references.shape[0]):
        torch.testing.assert_close(t0.inter_references[lvl], t0.init_reference, atol=1e-6, rtol=0)

    _perturb(model)
    with torch.no_grad():
        state = model.forward_state(frames, pad)
    t = state.transformer
    assert t.layer_boxes is None and t.inter_references.shape == (2, 1, 20, 2)
    prev = t.init_reference
    for lvl in range(t.hs.shape[0]):
        expect = (model.transformer.decoder.ref_point_embed[lvl](t.hs[lvl]) + inverse_sigmoid(prev)).sigmoid()
        torch.testing.assert_close(t.inter_references[lvl], expect, atol=1e-6, rtol=0)
        assert (t.inter_references[lvl] - prev).abs().max() > 1e-3  # it really moved
        prev = t.inter_references[lvl]
    # Boxes: xy refined from the previous layer's point, wh straight from the (shared) box head.
    delta = model.bbox_embed[1](t.hs[1])
    boxes = state.outputs["pred_boxes"]
    torch.testing.assert_close(
        boxes[..., :2], (delta[..., :2] + inverse_sigmoid(t.inter_references[0])).sigmoid()
    )
    torch.testing.assert_close(boxes[..., 2:], delta[..., 2:].sigmoid())
    aux = state.outputs["aux_outputs"][0]["pred_boxes"]
    d0 = model.bbox_embed[0](t.hs[0])
    torch.testing.assert_close(aux[..., :2], (d0[..., :2] + inverse_sigmoid(t.init_reference)).sigmoid())


def test_ddetr_ref_point_refine_forward_backward_reaches_every_layer():
    bundle = build(ref_cfg("MODEL.NUM_QUERIES", "8"))
    model, criterion = bundle.model, bundle.criterion
    _perturb(model.def_detr)
    model.train()
    batch = make_batch(2, (96, 128), pad_right=32)
    out = model(batch)
    assert out["pred_boxes"].shape == (2, 8, 4) and out["pred_masks"].shape[-2:] == (24, 32)
    losses = criterion(out, batch.targets)
    total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    # Points are not detached: the final boxes' loss reaches the first layer's refinement MLP.
    g = model.def_detr.transformer.decoder.ref_point_embed[0].layers[-1].weight.grad
    assert g is not None and g.abs().sum() > 0


def test_ddetr_ref_point_refine_is_exclusive_with_box_refine():
    cfg = ref_cfg("MODEL.WITH_BBX_REFINE", "True")
    with pytest.raises(ValueError, match="WITH_BBX_REFINE.*WITH_REF_POINT_REFINE.*exclusive"):
        build_deformable_detr_segm(cfg, 3)
    detr = build_deformable_detr_segm(ref_cfg("MODEL.MASK_ON", "False"), 3).def_detr
    with pytest.raises(ValueError, match="exclusive"):
        DeformableDETR(
            detr.backbone,
            detr.transformer,
            num_classes=3,
            num_queries=20,
            num_feature_levels=3,
            with_box_refine=True,
            with_ref_point_refine=True,
        )
    # The default config keeps box refinement and no reference-point refinement.
    default = load_config(TINY, ["MODEL.NUM_CLASSES", "3"])
    assert default.MODEL.WITH_REF_POINT_REFINE is False and default.MODEL.WITH_BBX_REFINE is True
