"""``vidseg convert`` end to end on small official-format files."""

import argparse

import torch
from yacs.config import CfgNode

from vidseg.cli import main


def _ddetr_file(path):
    sd = {
        "backbone.0.body.conv1.weight": torch.rand(4, 3, 1, 1),
        "transformer.level_embed": torch.rand(4, 8),
        "class_embed.0.weight": torch.arange(5.0)[:, None].repeat(1, 8),
        "class_embed.0.bias": torch.arange(5.0),
        "bbox_embed.0.layers.0.weight": torch.rand(8, 8),
        "transformer.decoder.bbox_embed.0.layers.0.weight": torch.rand(8, 8),
        "query_embed.weight": torch.rand(12, 16),
    }
    torch.save({"model": sd, "args": argparse.Namespace(lr=2e-4)}, path, _use_new_zipfile_serialization=False)
    return sd


def test_convert_deformable_detr_with_shift(tmp_path, capsys):
    src, dst = tmp_path / "ddetr.pth", tmp_path / "out.pth"
    sd = _ddetr_file(src)
    assert main(["convert", str(src), str(dst), "--shift-class-neuron"]) == 0
    obj = torch.load(dst, weights_only=True)  # plain, safe format
    assert obj["converted_from"] == "deformable_detr" and obj["source_config"] == {"lr": 2e-4}
    m = obj["model"]
    assert set(m) == {"def_detr." + k for k in sd}
    assert m["def_detr.class_embed.0.bias"].tolist() == [1, 2, 3, 4, 0]
    assert "(deformable_detr)" in capsys.readouterr().out


def test_convert_never_overwrites_without_flag(tmp_path, capsys):
    src, dst = tmp_path / "ddetr.pth", tmp_path / "out.pth"
    _ddetr_file(src)
    dst.write_bytes(b"keep me")
    assert main(["convert", str(src), str(dst)]) == 1
    assert "--overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"
    assert main(["convert", str(src), str(dst), "--overwrite"]) == 0
    assert "def_detr.query_embed.weight" in torch.load(dst, weights_only=True)["model"]


def test_convert_to_devis_video(tmp_path):
    src, dst = tmp_path / "devis_coco.pth", tmp_path / "video.pth"
    sd = {
        "def_detr.transformer.level_embed": torch.rand(4, 16),
        "def_detr.transformer.encoder.layers.0.self_attn.attention_weights.bias": torch.rand(128),
        "def_detr.query_embed.weight": torch.rand(30, 32),
        "def_detr.class_embed.0.bias": torch.rand(91),
    }
    torch.save({"model": sd, "cfg": CfgNode({"SEED": 1})}, src, _use_new_zipfile_serialization=False)
    args = ["convert", str(src), str(dst), "--to", "devis-video", "--num-frames", "3", "--num-queries", "9"]
    assert main(args + ["--num-classes", "25"]) == 0
    obj = torch.load(dst, weights_only=True)
    assert obj["converted_from"] == "devis_maskhead+devis_stage2" and obj["source_config"] == {"SEED": 1}
    m = obj["model"]
    assert m["def_detr.query_embed.weight"].shape == (9, 32) and m["def_detr.class_embed.0.bias"].shape == (
        25,
    )
    assert m["def_detr.transformer.encoder.layers.0.self_attn.temporal_attention_weights.bias"].shape == (
        256,
    )
    assert m["def_detr.backbone.1.temporal_embed"].shape == (3, 16)


def test_convert_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    assert main(["convert", str(bad), str(tmp_path / "o.pth")]) == 1
    assert "bad.pth" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.pth")]) == 1
