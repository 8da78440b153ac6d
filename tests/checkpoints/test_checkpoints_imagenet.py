"""ImageNet weights from local files in torchvision ResNet and original Swin naming."""

import logging

import pytest
import torch

from vidseg.backbones import Backbone, SwinTransformer, build_backbone
from vidseg.checkpoints import CheckpointError, load_imagenet_backbone, resize_relative_position_bias


def _torchvision_resnet18_file(path):
    ref = build_backbone("resnet18", train_backbone=True).body.state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.rand(v.shape, generator=g) for k, v in ref.items()}
    for k in [k for k in ref if k.endswith("running_var")]:
        sd[k.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    sd["fc.weight"], sd["fc.bias"] = torch.rand(1000, 512), torch.rand(1000)
    torch.save(sd, path)
    return sd


def test_torchvision_resnet_naming(tmp_path, caplog):
    path = tmp_path / "resnet18-f37072fd.pth"
    sd = _torchvision_resnet18_file(path)
    with caplog.at_level(logging.WARNING):
        bb = build_backbone("resnet18", train_backbone=True, pretrained=str(path))
    assert caplog.records == []  # nothing missing or unexpected
    st = bb.state_dict()
    assert torch.equal(st["body.layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"])
    assert torch.equal(st["body.bn1.running_mean"], sd["bn1.running_mean"])
    report = load_imagenet_backbone(bb, path)
    assert report.ok and report.converted_from == "torchvision_resnet"
    assert "fc.weight" in report.dropped and "bn1.num_batches_tracked" in report.dropped
    # freezing is applied after loading
    assert not bb.body.conv1.weight.requires_grad and bb.body.layer2[0].conv1.weight.requires_grad


def test_missing_keys_are_reported_by_name(tmp_path, caplog):
    path = tmp_path / "partial.pth"
    sd = _torchvision_resnet18_file(path)
    del sd["layer4.1.conv2.weight"]
    sd["extra.weight"] = torch.ones(1)
    torch.save(sd, path)
    bb = build_backbone("resnet18", train_backbone=True)
    with caplog.at_level(logging.WARNING):
        report = load_imagenet_backbone(bb, path)
    assert report.missing == ["layer4.1.conv2.weight"] and report.unexpected == ["extra.weight"]
    assert "layer4.1.conv2.weight" in caplog.text and "extra.weight" in caplog.text
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo": torch.ones(1)}, unrelated)
    with pytest.raises(CheckpointError, match="unrelated.pth.*no tensor matched"):
        load_imagenet_backbone(bb, unrelated)


def _tiny_swin(window):
    body = SwinTransformer(
        embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=window, drop_path_rate=0.0
    )
    return Backbone("tiny_swin", body, ("res2", "res3"))


def test_original_swin_naming_and_window_interpolation(tmp_path):
    src = _tiny_swin(window=2).body
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith(("norm0", "norm1"))}
    sd["norm.weight"], sd["norm.bias"] = torch.ones(16), torch.zeros(16)  # classification-only final norm
    sd["head.weight"], sd["head.bias"] = torch.rand(10, 16), torch.rand(10)
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 4, 4)
    path = tmp_path / "swin_tiny_patch4_window2.pth"
    torch.save({"model": sd}, path)

    same = _tiny_swin(window=2)
    report = load_imagenet_backbone(same, path)
    assert report.converted_from == "swin_imagenet" and report.unexpected == []
    assert sorted(report.missing) == ["norm0.bias", "norm0.weight", "norm1.bias", "norm1.weight"]
    assert {"head.weight", "norm.weight", "layers.0.blocks.1.attn_mask"} <= set(report.dropped)
    k = "layers.1.blocks.0.attn.qkv.weight"
    assert torch.equal(same.body.state_dict()[k], sd[k])

    bigger = _tiny_swin(window=3)  # bias table 9 -> 25 rows, index recomputed
    report = load_imagenet_backbone(bigger, path)
    assert report.mismatched == [] and report.unexpected == []
    table = bigger.body.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (25, 1)
    assert bigger.body.layers[0].blocks[0].attn.relative_position_index.max() == 24
    out = bigger(torch.randn(1, 3, 30, 22))
    assert out["res3"].shape == (1, 16, 4, 3)


def test_resize_relative_position_bias():
    t = torch.full((13 * 13, 3), 0.5)
    r = resize_relative_position_bias(t, 12)
    assert r.shape == (23 * 23, 3) and torch.allclose(r, torch.full_like(r, 0.5))
    assert resize_relative_position_bias(t, 7) is t
    with pytest.raises(ValueError, match="square"):
        resize_relative_position_bias(torch.zeros(10, 2), 7)
