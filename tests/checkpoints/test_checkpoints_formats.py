"""Format detection, official name maps and the round trip through the official DeVIS layout."""

import argparse

import pytest
import torch
from conftest import TIE, module_tree, random_state_dict
from yacs.config import CfgNode

from vidseg.checkpoints import (
    CheckpointError,
    detect_format,
    extract_state_dict,
    load_weights,
    shift_class_neuron,
    write_weights,
)


def _save_official_devis(path, sd):
    cfg = CfgNode(
        {"MODEL": CfgNode({"BACKBONE": "resnet50", "MASK_ON": True}), "SOLVER": CfgNode({"EPOCHS": 25})}
    )
    torch.save(
        {
            "model": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]},
            "lr_scheduler": {"milestones": {15: 1}, "last_epoch": 25},
            "epoch": 25,
            "cfg": cfg,
            "vis_win_names": {"train": "x"},
            "best_val_stats": [0.38],
        },
        path,
        _use_new_zipfile_serialization=False,
    )


def _ddetr_keys(coco_shapes):
    return {
        k[len("def_detr.") :]: s for k, s in coco_shapes.items() if k.startswith("def_detr.")
    }  # no mask head in Deformable DETR files


def test_round_trip_official_maskhead_checkpoint(tmp_path, coco_shapes):
    sd = random_state_dict(coco_shapes)
    # the official models share the box heads: the two key copies hold the same tensors
    for k in [k for k in sd if k.startswith("def_detr.bbox_embed.")]:
        sd["def_detr.transformer.decoder." + k[len("def_detr.") :]] = sd[k]
    path = tmp_path / "r50_deformable_detr_segmentation.pth"
    _save_official_devis(path, sd)
    model = module_tree(coco_shapes, TIE)
    report = load_weights(model, path, strict=True)
    assert report.ok and report.converted_from == "devis_maskhead"
    loaded = model.state_dict()
    assert set(loaded) == set(coco_shapes)
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(42.5e6, rel=0.01)


def test_deformable_detr_checkpoint_with_shift(tmp_path, coco_shapes_tiny):
    shapes = _ddetr_keys(coco_shapes_tiny)
    sd = random_state_dict(shapes, seed=1)
    path = tmp_path / "r50_deformable_detr_plus_iterative_bbox_refinement.pth"
    torch.save({"model": sd, "args": argparse.Namespace(with_box_refine=True), "epoch": 49}, path)
    model = module_tree(coco_shapes_tiny, TIE)
    report = load_weights(model, path, shift_class_neuron=True)
    assert report.converted_from == "deformable_detr"
    assert report.unexpected == [] and report.mismatched == []
    assert report.missing and all(k.startswith(("bbox_attention.", "mask_head.")) for k in report.missing)
    new = model.state_dict()
    old_w, old_b = sd["class_embed.3.weight"], sd["class_embed.3.bias"]
    # label = category_id - 1: neuron i now holds the old neuron i + 1; old neuron 0 goes last
    assert torch.equal(new["def_detr.class_embed.3.weight"][0], old_w[1])
    assert torch.equal(new["def_detr.class_embed.3.weight"][-1], old_w[0])
    assert torch.equal(new["def_detr.class_embed.3.bias"][:-1], old_b[1:])
    assert torch.equal(
        new["def_detr.transformer.decoder.bbox_embed.2.layers.1.weight"], sd["bbox_embed.2.layers.1.weight"]
    )
    assert torch.equal(
        new["def_detr.backbone.0.body.layer3.5.conv2.weight"], sd["backbone.0.body.layer3.5.conv2.weight"]
    )
    with pytest.raises(RuntimeError, match="strict loading failed.*mask_head"):
        load_weights(model, path, strict=True)


def test_prefix_stripped_for_bare_detector(tmp_path, coco_shapes_tiny):
    sd = random_state_dict(coco_shapes_tiny, seed=2)
    path = tmp_path / "devis_coco.pth"
    _save_official_devis(path, sd)
    bare = module_tree(_ddetr_keys(coco_shapes_tiny), {"transformer.decoder.bbox_embed": "bbox_embed"})
    report = load_weights(bare, path)
    assert report.missing == []
    assert report.unexpected and all(
        k.startswith(("bbox_attention.", "mask_head.")) for k in report.unexpected
    )
    assert torch.equal(bare.state_dict()["query_embed.weight"], sd["def_detr.query_embed.weight"])


def test_duplicated_bbox_embed_handling(tmp_path, coco_shapes_tiny):
    sd = random_state_dict(coco_shapes_tiny, seed=3)
    path = tmp_path / "devis_coco.pth"
    _save_official_devis(path, sd)
    # a model that registers the box heads only once: the decoder alias must not be "unexpected"
    once = {
        k: s
        for k, s in coco_shapes_tiny.items()
        if not k.startswith("def_detr.transformer.decoder.bbox_embed.")
    }
    report = load_weights(module_tree(once), path)
    assert report.ok, report.summary()
    # a checkpoint with only one copy fills the alias the model expects
    single = {k: v for k, v in sd.items() if not k.startswith("def_detr.transformer.decoder.bbox_embed.")}
    path2 = tmp_path / "single.pth"
    write_weights(path2, single, config={"MODEL": {}})
    untied = module_tree(coco_shapes_tiny)  # two separate copies
    report = load_weights(untied, path2, strict=True)
    assert report.converted_from == "vidseg"
    st = untied.state_dict()
    assert torch.equal(
        st["def_detr.transformer.decoder.bbox_embed.5.layers.2.bias"],
        sd["def_detr.bbox_embed.5.layers.2.bias"],
    )


def test_shape_mismatch_is_reported_not_loaded(tmp_path):
    path = tmp_path / "m.pth"
    write_weights(path, {"a.weight": torch.ones(3, 2), "b": torch.ones(2)}, config={})
    model = module_tree({"a.weight": (4, 2), "b": (2,)})
    report = load_weights(model, path)
    assert report.mismatched == ["a.weight"] and "(3, 2)" in report.summary()
    assert (model.state_dict()["a.weight"] == 0).all() and (model.state_dict()["b"] == 1).all()


def test_detect_format_and_extract():
    t = torch.zeros(1)
    assert detect_format({"def_detr.x": t}) == "devis_maskhead"
    assert detect_format({"def_detr.backbone.1.temporal_embed": t}) == "devis_video"
    ddetr = {"backbone.0.body.conv1.weight": t, "transformer.level_embed": t, "class_embed.0.bias": t}
    assert detect_format(ddetr) == "deformable_detr"
    assert detect_format({"x": t}, {"config": {}}) == "vidseg"
    assert detect_format({"foo.bar": t}) == "state_dict"
    sd, meta = extract_state_dict({"model": {"module.a": t}, "epoch": 1})
    assert list(sd) == ["a"] and meta == {"epoch": 1}
    with pytest.raises(CheckpointError, match="field 'model'"):
        extract_state_dict({"model": {"a": 3}}, "f.pth")
    with pytest.raises(CheckpointError, match="top level"):
        extract_state_dict([1, 2], "f.pth")


def test_shift_class_neuron_only_touches_class_embed():
    sd = {"class_embed.0.bias": torch.arange(4.0), "bbox_embed.0.layers.0.bias": torch.arange(4.0)}
    out = shift_class_neuron(sd)
    assert out["class_embed.0.bias"].tolist() == [1, 2, 3, 0]
    assert out["bbox_embed.0.layers.0.bias"].tolist() == [0, 1, 2, 3]


def test_save_checkpoint_is_weights_only_and_refuses_overwrite(tmp_path):
    path = tmp_path / "out.pth"
    write_weights(path, {"a": torch.ones(2)}, config={"MODEL": {"X": 1}}, converted_from="devis_maskhead")
    obj = torch.load(path, weights_only=True)
    assert obj["config"] == {"MODEL": {"X": 1}} and obj["converted_from"] == "devis_maskhead"
    with pytest.raises(FileExistsError, match="overwrite"):
        write_weights(path, {"a": torch.zeros(2)})
    write_weights(path, {"a": torch.zeros(2)}, overwrite=True)
    assert torch.load(path, weights_only=True)["model"]["a"].sum() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out.pth"]  # no temporary left behind


@pytest.mark.slow
def test_round_trip_into_the_real_image_model(tmp_path, coco_shapes):
    build = pytest.importorskip("vidseg.models.devis.build")
    from vidseg.models import load_config

    cfg = load_config(
        "vidseg/configs/deformable_mask_head/deformable_mask_head_R_50.yaml", ["MODEL.WEIGHTS", ""]
    )
    model = build.build_deformable_detr_segm(cfg, 91)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == coco_shapes
    sd = random_state_dict(coco_shapes, seed=5)
    for k in [k for k in sd if k.startswith("def_detr.bbox_embed.")]:
        sd["def_detr.transformer.decoder." + k[len("def_detr.") :]] = sd[k]
    path = tmp_path / "official.pth"
    _save_official_devis(path, sd)
    report = load_weights(model, path, strict=True)
    assert report.ok and report.notes == []
    st = model.state_dict()
    assert all(torch.equal(st[k], v) for k, v in sd.items())
