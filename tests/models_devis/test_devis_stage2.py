"""Stage-2 initialisation of the video model from a stage-1 (COCO mask-head) checkpoint through
``load_weights`` (what ``MODEL.WEIGHTS`` calls), devis.md §3.8: a vidseg file and an official-format file."""

import logging
import math

import pytest
import torch

from vidseg.checkpoints import load_weights, write_weights
from vidseg.models import load_config
from vidseg.models.devis.build import build_deformable_detr_segm, build_devis_model

ONE_LEVEL = [
    "MODEL.NUM_FEATURE_LEVELS", "1",
    "MODEL.MASK_HEAD.UPSAMPLING_RESOLUTIONS", "['/32']",
    "MODEL.MASK_HEAD.USED_FEATURES",
    "[['/32','encoded'],['/16','backbone'],['/8','backbone'],['/4','backbone']]",
    "MODEL.MASK_HEAD.DEVIS.CONV_HEAD_3D", "True",
]  # fmt: skip
ENC0 = "def_detr.transformer.encoder.layers.0.self_attn."
DEC1 = "def_detr.transformer.decoder.layers.1.cross_attn."


@pytest.fixture(scope="module")
def coco_state():
    torch.manual_seed(1)
    cfg = load_config("quickstart/deformable_mask_head_tiny.yaml", ["MODEL.NUM_CLASSES", "5"])
    model = build_deformable_detr_segm(cfg, 5)
    with torch.no_grad():  # non-trivial attention tensors (their init is zeros / rays)
        for name, p in model.named_parameters():
            if "sampling_offsets" in name or "attention_weights" in name:
                p.normal_()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _video(*opts):
    torch.manual_seed(2)
    cfg = load_config("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "3", *opts])
    return build_devis_model(cfg, 3)


def _official_file(path, sd):
    # What the official main.py writes: a legacy (non-zip) pickle with the state dict under "model".
    torch.save({"model": sd, "epoch": 25}, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize("fmt", ["vidseg", "official"])
def test_copied_tensors_are_equal_and_reinitialised_ones_are_not(tmp_path, coco_state, fmt, caplog):
    path = tmp_path / "coco.pth"
    if fmt == "vidseg":
        write_weights(path, coco_state)
    else:
        _official_file(path, coco_state)
    model = _video()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="vidseg"):
        report = load_weights(model, path)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert "devis_stage2" in report.converted_from
    sd = model.state_dict()
    for k in (
        "def_detr.backbone.0.body.conv1.weight",
        "def_detr.input_proj.2.0.weight",
        "def_detr.transformer.level_embed",
        ENC0 + "sampling_offsets.weight",
        ENC0 + "value_proj.weight",
        DEC1 + "attention_weights.bias",
        "def_detr.transformer.decoder.layers.1.self_attn.in_proj_weight",
        "def_detr.bbox_embed.1.layers.2.weight",
        "bbox_attention.k_linear_2.weight",
        "mask_head.lay3.weight",
    ):
        assert torch.equal(sd[k], coco_state[k]), k
    # Temporal projections: the spatial ones, repeated for each of the T-1 = 2 other frames.
    m, levels, kc, kt = 8, 3, 2, 2
    spatial = coco_state[ENC0 + "sampling_offsets.weight"].view(m, levels, kc, 2, -1)
    temporal = sd[ENC0 + "temporal_sampling_offsets.weight"].view(m, 2, levels, kt, 2, -1)
    for j in range(2):
        assert torch.equal(temporal[:, j], spatial[:, :, :kt])
    w = sd[DEC1 + "temporal_attention_weights.weight"].view(m, 2, levels, kt, -1)
    assert torch.equal(
        w[:, 1], coco_state[DEC1 + "attention_weights.weight"].view(m, levels, kc, -1)[:, :, :kt]
    )
    # Re-initialised: queries, class head, temporal embedding.
    assert sd["def_detr.query_embed.weight"].shape == (18, 256)
    assert not torch.equal(sd["def_detr.query_embed.weight"], coco_state["def_detr.query_embed.weight"][:18])
    assert not torch.equal(sd["def_detr.query_embed.weight"], before["def_detr.query_embed.weight"])
    assert sd["def_detr.class_embed.0.weight"].shape == (3, 128)
    assert not torch.equal(
        sd["def_detr.class_embed.0.weight"], coco_state["def_detr.class_embed.0.weight"][:3]
    )
    assert torch.allclose(sd["def_detr.class_embed.1.bias"], torch.full((3,), -math.log(99)))
    assert not torch.equal(
        sd["def_detr.backbone.1.temporal_embed"], before["def_detr.backbone.1.temporal_embed"]
    )
    log = caplog.text
    assert "DeVIS stage 2 from a COCO image model" in log and "copied as-is" in log
    assert "temporal projections copied from the spatial ones" in log
    assert "re-initialised: def_detr.query_embed.weight (18, 256)" in log and "temporal_embed (3, 128)" in log


def test_single_level_ablation_slices_the_coco_levels(tmp_path, coco_state, caplog):
    path = tmp_path / "coco.pth"
    write_weights(path, coco_state)
    model = _video(*ONE_LEVEL)
    with caplog.at_level(logging.INFO, logger="vidseg"):
        report = load_weights(model, path)
    sd = model.state_dict()
    assert torch.equal(sd["def_detr.input_proj.0.0.weight"], coco_state["def_detr.input_proj.2.0.weight"])
    assert torch.equal(
        sd["def_detr.transformer.level_embed"], coco_state["def_detr.transformer.level_embed"][:1]
    )
    spatial = coco_state[ENC0 + "sampling_offsets.bias"].view(8, 3, 2, 2)
    assert torch.equal(sd[ENC0 + "sampling_offsets.bias"].view(8, 1, 2, 2), spatial[:, :1])
    # The 3-d head and the plain head without out_lay are new: reported, not silently invented.
    assert any(k.startswith("conv_head_3d.") for k in report.missing)
    assert "sliced or moved to the model's levels" in caplog.text


def test_without_temporal_connections_nothing_temporal_is_built(tmp_path, coco_state):
    path = tmp_path / "coco.pth"
    write_weights(path, coco_state)
    model = _video("MODEL.DEVIS.DEFORMABLE_ATTENTION.DISABLE_TEMPORAL_CONNECTIONS", "True")
    report = load_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    assert "devis_stage2" in report.converted_from  # queries/classes still adapted
    assert model.state_dict()["def_detr.query_embed.weight"].shape == (18, 256)
