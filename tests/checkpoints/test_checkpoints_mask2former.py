"""Mask2Former under the official detectron2 names: the detector part of the GRAtt-VIS key list, the VITA,
GenVIS and GRAtt-VIS training files as detectron2's checkpointer writes them, and Mask2Former's ``.pkl``."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
from official_files import detectron2_shapes, write_detectron2_checkpoint

from vidseg.checkpoints import load_weights, vidseg_to_detectron2
from vidseg.models import build_model, load_config

DETECTOR = ("backbone.", "sem_seg_head.")


@pytest.fixture(scope="module")
def r50_ovis():
    """The R50 detector of the GRAtt-VIS OVIS config (25 classes)."""
    torch.manual_seed(0)
    cfg = load_config(
        "mask2former/frames_R50_ovis.yaml", ["MODEL.WEIGHTS", "", "MODEL.DEFORM_ATTN_IMPL", "torch"]
    )
    return lambda: build_model(cfg).model


def test_the_detector_has_exactly_the_official_detector_names_and_shapes(r50_ovis, grattvis_shapes):
    official = {k: s for k, s in grattvis_shapes.items() if k.startswith(DETECTOR)}
    ours = {k: tuple(v.shape) for k, v in vidseg_to_detectron2(r50_ovis().state_dict()).items()}
    assert sorted(set(official) - set(ours)) == [] and sorted(set(ours) - set(official)) == []
    assert {k: s for k, s in ours.items() if s != official[k]} == {}
    assert len(official) == 265 + len([k for k in official if k.startswith("sem_seg_head.")])


@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) for m in ("vita", "genvis")] + ["grattvis"],
)
def test_official_vis_files_load_into_the_detector_by_name(tmp_path, r50_ovis, grattvis_shapes, method):
    path = tmp_path / f"{method}_r50_ovis.pth"
    written = write_detectron2_checkpoint(path, detectron2_shapes(grattvis_shapes, method), iterations=1)
    model = r50_ovis()
    report = load_weights(model, path)
    assert report.converted_from == "detectron2"
    assert report.missing == []
    assert report.mismatched == []
    assert report.unexpected and all(k.startswith("vita_module.") for k in report.unexpected)
    assert {"criterion.empty_weight", "vita_criterion.empty_weight"} <= set(report.dropped)
    assert {"trainer", "iteration"} <= set(report.not_weights)
    assert report.renamed["backbone.res2.0.conv1.norm.weight"] == "backbone.body.layer1.0.bn1.weight"
    src = written.state_dict()
    ours = vidseg_to_detectron2(model.state_dict())
    for key in ("backbone.stem.conv1.weight", "backbone.res5.2.conv3.norm.running_var",
                "sem_seg_head.pixel_decoder.transformer.level_embed",
                "sem_seg_head.predictor.transformer_cross_attention_layers.8.multihead_attn.in_proj_weight",
                "sem_seg_head.predictor.class_embed.weight"):  # fmt: skip
        torch.testing.assert_close(ours[key], src[key])


def test_a_mask2former_pkl_with_static_query_loads_and_reports_the_other_class_head(tmp_path, r50_ovis):
    """``model_final_*.pkl``: a plain pickle of numpy arrays, COCO's 81-row class head, old query name."""
    torch.manual_seed(1)
    coco = vidseg_to_detectron2(r50_ovis().state_dict())
    coco["sem_seg_head.predictor.class_embed.weight"] = torch.randn(81, 256)
    coco["sem_seg_head.predictor.class_embed.bias"] = torch.randn(81)
    coco["sem_seg_head.predictor.static_query.weight"] = coco.pop("sem_seg_head.predictor.query_feat.weight")
    coco["criterion.empty_weight"] = torch.ones(81)
    path = tmp_path / "model_final_3c8ec9.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in coco.items()}, "__author__": "Mask2Former"}, f)
    model = r50_ovis()
    report = load_weights(model, path)
    assert report.converted_from == "detectron2" and report.unexpected == []
    assert sorted(report.mismatched) == [
        "sem_seg_head.predictor.class_embed.bias", "sem_seg_head.predictor.class_embed.weight"
    ]  # fmt: skip
    assert report.missing == report.mismatched  # reported, left at their initialisation
    assert (
        report.renamed["sem_seg_head.predictor.static_query.weight"]
        == "sem_seg_head.predictor.query_feat.weight"
    )
    torch.testing.assert_close(
        model.sem_seg_head.predictor.query_feat.weight, coco["sem_seg_head.predictor.static_query.weight"]
    )


def test_state_dict_round_trip_through_the_official_names(tmp_path):
    """vidseg names -> detectron2 names (a detectron2-style file) -> a fresh model: the same tensors."""
    cfg = load_config("quickstart/mask2former_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    torch.manual_seed(2)
    a = build_model(cfg).model
    torch.manual_seed(3)
    b = build_model(cfg).model
    official = vidseg_to_detectron2(a.state_dict())
    assert "backbone.stem.conv1.weight" in official and "backbone.res2.0.conv1.norm.running_mean" in official
    path = tmp_path / "model_0004999.pth"
    torch.save({"model": official, "iteration": 4999}, path)
    report = load_weights(b, path, strict=True)
    assert report.ok and len(report.mapped) == len(a.state_dict())
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, msg=k)


def test_swin_detector_uses_the_d2_swin_names_and_loads_a_detectron2_file(tmp_path):
    """D2SwinTransformer names (grattvis.md §7): ``backbone.patch_embed.*``,
    ``backbone.layers.{i}.blocks.{j}.*``, ``backbone.layers.{i}.downsample.*``, ``backbone.norm{0..3}.*``."""
    opts = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.BACKBONE.NAME", "D2SwinTransformer"]
    opts += ["MODEL.SWIN.EMBED_DIM", "96", "MODEL.SWIN.DEPTHS", "[2, 2, 6, 2]", "MODEL.SWIN.WINDOW_SIZE", "7"]
    opts += ["MODEL.SWIN.NUM_HEADS", "[3, 6, 12, 24]"]
    cfg = load_config("quickstart/mask2former_tiny.yaml", opts)
    torch.manual_seed(4)
    a = build_model(cfg).model
    official = vidseg_to_detectron2(a.state_dict())
    backbone = sorted(k for k in official if k.startswith("backbone."))
    pattern = re.compile(
        r"^backbone\.(patch_embed\.(proj|norm)\.(weight|bias)|norm[0-3]\.(weight|bias)"
        r"|layers\.\d\.downsample\.(reduction\.weight|norm\.(weight|bias))"
        r"|layers\.\d\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
        r"|layers\.\d\.blocks\.\d+\.attn\.relative_position_(bias_table|index))$"
    )
    assert backbone and [k for k in backbone if not pattern.match(k)] == []
    assert "backbone.layers.2.blocks.5.attn.relative_position_bias_table" in official
    path = tmp_path / "swin.pth"
    torch.save({"model": official, "iteration": 9}, path)
    torch.manual_seed(5)
    b = build_model(cfg).model
    report = load_weights(b, path, strict=True)
    assert report.renamed["backbone.patch_embed.proj.weight"] == "backbone.body.patch_embed.proj.weight"
    torch.testing.assert_close(b.backbone.body.norm3.weight, a.backbone.body.norm3.weight)
