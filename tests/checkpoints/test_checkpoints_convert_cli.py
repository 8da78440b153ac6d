"""``vidseg convert`` end to end on small official-format files."""

import argparse

import pytest
import torch
from yacs.config import CfgNode

from vidseg.checkpoints import CheckpointError, load_weights, safe_read, write_weights
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
    assert main(["convert", str(src), str(dst), "--shift-class-neuron", "--format", "pth"]) == 0
    obj = torch.load(dst, weights_only=True)  # plain, safe format
    assert obj["converted_from"] == "deformable_detr" and obj["source_config"] == {"lr": 2e-4}
    m = obj["model"]
    assert set(m) == {"def_detr." + k for k in sd}
    assert m["def_detr.class_embed.0.bias"].tolist() == [1, 2, 3, 4, 0]
    assert "(deformable_detr)" in capsys.readouterr().out


def test_convert_never_overwrites_without_flag(tmp_path, capsys):
    src, dst = tmp_path / "ddetr.pth", tmp_path / "out.safetensors"
    _ddetr_file(src)
    dst.write_bytes(b"keep me")
    assert main(["convert", str(src), str(dst)]) == 1
    assert "--overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"
    assert main(["convert", str(src), str(dst), "--overwrite"]) == 0
    assert "def_detr.query_embed.weight" in safe_read(dst)["model"]


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
    args += ["--format", "pth"]
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
    assert main(["convert", str(bad), str(tmp_path / "o.safetensors")]) == 1
    assert "bad.pth" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 1


def test_convert_writes_safetensors_by_default_and_loads_it_back(tmp_path, monkeypatch, capsys):
    src = tmp_path / "ddetr.pth"
    sd = _ddetr_file(src)
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(src)]) == 0  # OUT defaults to IN's stem + .safetensors, here
    out = tmp_path / "ddetr.safetensors"
    assert "-> ddetr.safetensors" in capsys.readouterr().out
    head = out.read_bytes()[:9]
    assert head[8:9] == b"{" and not head.startswith(b"PK")  # safetensors, not a torch zip
    obj = safe_read(out)
    assert obj["converted_from"] == "deformable_detr" and obj["source_config"] == {"lr": 2e-4}
    assert obj["source_file"] == "ddetr.pth" and obj["class_neuron_shifted"] is False
    assert set(obj["model"]) == {"def_detr." + k for k in sd}
    for k, v in sd.items():
        assert torch.equal(obj["model"]["def_detr." + k], v), k
    # what MODEL.WEIGHTS does with it: by name, into a bare detector (the prefix stripped)
    model = torch.nn.Module()
    model.query_embed = torch.nn.Embedding(12, 16)
    report = load_weights(model, out)
    assert report.converted_from == "vidseg" and report.mapped == ["query_embed.weight"]
    assert torch.equal(model.query_embed.weight.detach(), sd["query_embed.weight"])


def test_write_weights_safetensors_keeps_the_config_and_shared_tensors(tmp_path):
    shared = torch.rand(3, 4)
    path = tmp_path / "w.safetensors"
    write_weights(path, {"a": shared, "b": shared, "c": shared.t()}, config={"MODEL": {"X": 1}}, notes=["n"])
    obj = safe_read(path)
    assert obj["config"] == {"MODEL": {"X": 1}} and obj["notes"] == ["n"]
    assert torch.equal(obj["model"]["a"], shared) and torch.equal(obj["model"]["b"], shared)
    assert torch.equal(obj["model"]["c"], shared.t())
    torch.save({"model": {"a": shared}}, tmp_path / "named.safetensors")  # a torch file, whatever its name
    assert torch.equal(safe_read(tmp_path / "named.safetensors")["model"]["a"], shared)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        safe_read(tmp_path / "cut.safetensors")


def test_convert_refuses_a_name_that_contradicts_the_format(tmp_path, capsys):
    src = tmp_path / "ddetr.pth"
    _ddetr_file(src)
    assert main(["convert", str(src), str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out.pth" in err and "--format pth" in err
    assert not (tmp_path / "out.pth").exists()
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--format", "pth"]) == 1
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "MODEL.DEVICE", "cpu"]) == 1
    assert "need --config-file" in capsys.readouterr().err
