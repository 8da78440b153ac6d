"""Backbone shapes, strides, channels, freezing and official key names."""

import math
from pathlib import Path

import pytest
import torch

from vidseg.backbones import build_backbone, feature_masks, list_backbones

EXPECTED_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "swin_t_p4w7": (96, 192, 384, 768),
    "swin_s_p4w7": (96, 192, 384, 768),
    "swin_b_p4w7": (128, 256, 512, 1024),
    "swin_l_p4w7": (192, 384, 768, 1536),
    "swin_l_p4w12": (192, 384, 768, 1536),
}
SPEC = str(Path(__file__).resolve().parents[1] / "spec_keys") + "/"


def test_registry_lists_every_devis_name():
    assert set(list_backbones()) == set(EXPECTED_CHANNELS)


@pytest.mark.parametrize("name", list(EXPECTED_CHANNELS))
def test_channels_and_strides_without_running(name):
    with torch.device("meta"):
        bb = build_backbone(name, train_backbone=False)
        out = bb(torch.empty(1, 3, 64, 96))
    assert tuple(bb.out_channels.values()) == EXPECTED_CHANNELS[name]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (1, c, 64 // s, 96 // s)
        for (k, c), s in zip(bb.out_channels.items(), bb.strides.values(), strict=True)
    }


# Swin-B/L take ~10 s each to initialise on 2 cores: slow-marked; every name is also checked on "meta".
SLOW = ("resnet101", "swin_s_p4w7", "swin_b_p4w7", "swin_l_p4w7", "swin_l_p4w12")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in EXPECTED_CHANNELS]
)
def test_output_shapes_strides_channels(name):
    bb = build_backbone(name, train_backbone=False).eval()
    h, w = 70, 101  # deliberately not a multiple of 32 nor of the Swin window
    with torch.no_grad():
        out = bb(torch.randn(1, 3, h, w))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    assert bb.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert tuple(bb.out_channels.values()) == EXPECTED_CHANNELS[name]
    for key, feat in out.items():
        s = bb.strides[key]
        assert feat.shape == (1, bb.out_channels[key], math.ceil(h / s), math.ceil(w / s)), key
        assert torch.isfinite(feat).all()


def test_out_features_subset_and_errors():
    bb = build_backbone("resnet18", train_backbone=True, out_features=("res5", "res3"))
    out = bb(torch.randn(2, 3, 64, 64))
    assert list(out) == ["res3", "res5"] and bb.num_channels == [128, 512]
    with pytest.raises(KeyError, match="unknown backbone 'resnet7'"):
        build_backbone("resnet7", train_backbone=True)
    with pytest.raises(ValueError, match="out_features"):
        build_backbone("resnet18", train_backbone=True, out_features=("res6",))
    with pytest.raises(ValueError, match="expected images"):
        bb(torch.randn(2, 64, 64))


def test_dilation_keeps_res5_at_stride_16():
    bb = build_backbone("resnet50", train_backbone=True, dilation=True)
    out = bb(torch.randn(1, 3, 64, 64))
    assert bb.strides["res5"] == 16 and out["res5"].shape[-2:] == (4, 4)
    assert bb.body.layer4[1].conv2.dilation == (2, 2) and bb.body.layer4[0].conv2.stride == (1, 1)
    with pytest.raises(ValueError, match="dilation"):
        build_backbone("resnet18", train_backbone=True, dilation=True)


def test_resnet_stem_and_layer1_frozen():
    bb = build_backbone("resnet50", train_backbone=True)
    for name, p in bb.named_parameters():
        trainable = name.startswith(("body.layer2.", "body.layer3.", "body.layer4."))
        assert p.requires_grad == trainable, name
    # BatchNorm tensors are buffers: no optimiser can change them.
    assert not any("bn" in n or "downsample.1" in n for n, _ in bb.named_parameters())
    frozen = build_backbone("resnet18", train_backbone=False)
    assert not any(p.requires_grad for p in frozen.parameters())
    swin = build_backbone("swin_t_p4w7", train_backbone=True)
    assert all(p.requires_grad for p in swin.parameters())


def test_backward_reaches_trainable_layers_only():
    bb = build_backbone("resnet18", train_backbone=True)
    out = bb(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert bb.body.conv1.weight.grad is None and bb.body.layer1[0].conv1.weight.grad is None
    assert bb.body.layer2[0].conv1.weight.grad is not None


def _spec_backbone_keys(path):
    keys = {}
    prefix = "def_detr.backbone.0."
    for line in open(path):
        name, shape = line.split(" ", 1)
        if name.startswith(prefix):
            keys[name[len(prefix) :]] = tuple(int(s) for s in shape.strip(" ()\n").split(",") if s.strip())
    return keys


@pytest.mark.parametrize(
    "name, spec_file",
    [
        ("resnet50", "devis-state-dict-keys-maskhead-R50-COCO.txt"),
        ("swin_l_p4w12", "devis-state-dict-keys-SwinL-YT21.txt"),
    ],
)
def test_state_dict_names_match_official(name, spec_file):
    with torch.device("meta"):  # names and shapes only: skip the (slow) initialisation
        bb = build_backbone(name, train_backbone=True)
    ours = {k: tuple(v.shape) for k, v in bb.state_dict().items()}
    assert ours == _spec_backbone_keys(SPEC + spec_file)


def test_feature_masks_nearest():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :, 4:] = True
    feats = {"a": torch.zeros(1, 3, 4, 4), "b": torch.zeros(1, 3, 2, 2)}
    m = feature_masks(mask, feats)
    assert m["a"][0, 0].tolist() == [False, False, True, True]
    assert m["b"][0].tolist() == [[False, True], [False, True]]


def test_freeze_stages_follows_detectron2_freeze_at():
    from vidseg.backbones import build_backbone, freeze_stages

    bb = build_backbone("resnet18", train_backbone=True)
    frozen = freeze_stages(bb, 2)  # the stem and res2
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    trainable = {n for n, p in bb.body.named_parameters() if p.requires_grad}
    assert any(n.startswith("layer2.") for n in trainable)
    assert not any(n.startswith("layer1.") for n in trainable)
    assert freeze_stages(bb, 0) == [] and all(p.requires_grad for p in bb.body.parameters())
