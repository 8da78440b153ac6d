"""Every official file format, written as the official code writes it, read through ``MODEL.WEIGHTS`` and
``vidseg convert``: what was mapped, shifted and left out is reported, and the tensors arrive intact."""

from __future__ import annotations

import collections
import logging
import pickle

import numpy as np
import pytest
import torch
from conftest import TIE, module_tree
from official_files import (
    _detectron2_buffer,
    detectron2_shapes,
    torchvision_resnet50_state_dict,
    write_deformable_detr_checkpoint,
    write_detectron2_checkpoint,
    write_detectron2_imagenet_pkl,
    write_devis_checkpoint,
    write_torchvision_resnet50,
)

from vidseg.checkpoints import UnsafeCheckpointError, convert_checkpoint, load_weights, safe_read
from vidseg.cli import main

BODY = "def_detr.backbone.0.body."


def _ddetr_shapes(shapes):
    return {k[len("def_detr.") :]: s for k, s in shapes.items() if k.startswith("def_detr.")}


def _tiny(shapes):
    return {k: tuple(min(d, 3) for d in s) for k, s in shapes.items()}


class Official:
    """One official file: where it is, the model it goes into, and what the report must say."""

    def __init__(
        self, path, make_model, expected, *, n_mapped, renamed=0, left_out=(), not_weights=(), strict=True
    ):
        self.path, self.make_model, self.expected = path, make_model, expected
        self.n_mapped, self.renamed, self.left_out = n_mapped, renamed, set(left_out)
        self.not_weights, self.strict = set(not_weights), strict


@pytest.fixture(scope="module")
def files(tmp_path_factory, coco_shapes, coco_shapes_tiny, yt19_shapes, grattvis_shapes):
    d = tmp_path_factory.mktemp("official")
    out = {}
    devis_meta = ("optimizer", "lr_scheduler", "epoch", "cfg", "vis_win_names", "best_val_stats")

    path = d / "r50_deformable_detr_segmentation.pth"
    m = write_devis_checkpoint(path, coco_shapes_tiny, video=False)
    out["devis_maskhead"] = Official(
        path, lambda: module_tree(coco_shapes_tiny, TIE), m.state_dict(), n_mapped=len(coco_shapes_tiny),
        not_weights=devis_meta,
    )  # fmt: skip
    yt19_tiny = _tiny(yt19_shapes)
    path = d / "devis_r50_yt19.pth"
    m = write_devis_checkpoint(path, yt19_tiny, video=True)
    out["devis_video"] = Official(
        path,
        lambda: module_tree(yt19_tiny, TIE),
        m.state_dict(),
        n_mapped=len(yt19_tiny),
        not_weights=devis_meta,
    )

    ddetr = _ddetr_shapes(coco_shapes_tiny)
    for legacy in (False, True):
        path = d / f"r50_deformable_detr_plus_iterative_bbox_refinement{'_legacy' if legacy else ''}.pth"
        m = write_deformable_detr_checkpoint(path, ddetr, legacy=legacy)
        expected = {"def_detr." + k: v for k, v in m.state_dict().items()}
        out["deformable_detr" + ("_legacy" if legacy else "")] = Official(
            path, lambda: module_tree(coco_shapes_tiny, TIE), expected, n_mapped=len(ddetr),
            renamed=len(ddetr), not_weights=("optimizer", "lr_scheduler", "epoch", "args"), strict=False,
        )  # fmt: skip

    for method in ("vita", "genvis", "grattvis"):
        shapes = _tiny(detectron2_shapes(grattvis_shapes, method))
        for old in (False, True) if method == "grattvis" else (False,):
            path = d / f"{method}_r50_ovis{'_old_trainer' if old else ''}.pth"
            m = write_detectron2_checkpoint(path, shapes, old_trainer=old)
            meta = ("optimizer", "scheduler", "iteration") if old else ("trainer", "iteration")
            out[method + ("_old_trainer" if old else "")] = Official(
                path, lambda s=shapes: module_tree(s, is_buffer=_detectron2_buffer), m.state_dict(),
                n_mapped=len(shapes), not_weights=meta,
            )  # fmt: skip

    # ImageNet files at the real ResNet-50 shapes, into a model whose backbone is full size and the rest tiny.
    body = {k: s for k, s in coco_shapes.items() if k.startswith(BODY)}
    partial = {**body, **{k: s for k, s in coco_shapes_tiny.items() if not k.startswith(BODY)}}

    def backbone_model():
        return module_tree(partial, TIE)

    for legacy in (True, False):
        sd = torchvision_resnet50_state_dict(coco_shapes, num_batches_tracked=not legacy)
        path = d / ("resnet50-19c8e357.pth" if legacy else "resnet50-11ad3fa6.pth")
        write_torchvision_resnet50(path, sd, legacy=legacy)
        expected = {BODY + k: v for k, v in sd.items() if not k.startswith("fc.") and "num_batches" not in k}
        dropped = [k for k in sd if k.startswith("fc.") or "num_batches" in k]
        out["torchvision_resnet" + ("_legacy" if legacy else "")] = Official(
            path,
            backbone_model,
            expected,
            n_mapped=len(body),
            renamed=len(body),
            left_out=dropped,
            strict=False,
        )
    sd = torchvision_resnet50_state_dict(coco_shapes, num_batches_tracked=True, seed=4)
    path = d / "R-50.pkl"
    new_names = write_detectron2_imagenet_pkl(path, sd)
    expected = {BODY + k: v for k, v in sd.items() if not k.startswith("fc.") and "num_batches" not in k}
    dropped = [k for k in new_names if k.startswith("stem.fc.") or "num_batches" in k]
    out["detectron2_imagenet"] = Official(
        path, backbone_model, expected, n_mapped=len(body), renamed=len(body), left_out=dropped,
        not_weights=("__author__", "matching_heuristics"), strict=False,
    )  # fmt: skip
    return out


ALL = [
    "devis_maskhead", "devis_video", "deformable_detr", "deformable_detr_legacy", "vita", "genvis",
    "grattvis", "grattvis_old_trainer", "torchvision_resnet", "torchvision_resnet_legacy",
    "detectron2_imagenet",
]  # fmt: skip


def _assert_loaded(model, expected):
    st = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(st[k], v), k


def test_the_devis_file_holds_what_main_py_saves(files):
    path = files["devis_maskhead"].path
    assert path.read_bytes()[:2] == b"\x80\x02"  # legacy pickle, not a zip
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the yacs CfgNode
    obj = safe_read(path)
    milestones = obj["lr_scheduler"]["milestones"]
    assert type(milestones) is collections.Counter and milestones == {2: 1} and milestones[7] == 0
    assert obj["lr_scheduler"]["last_epoch"] == 3 and obj["epoch"] == 3
    groups = obj["optimizer"]["param_groups"]
    assert len(groups) == 5 and [len(g["params"]) > 0 for g in groups] == [True, True, True, True, False]
    # mask head x10 of BASE_LR 2e-5, dropped x0.1 at the milestone (epoch 2)
    assert groups[3]["initial_lr"] == pytest.approx(2e-4) and groups[3]["lr"] == pytest.approx(2e-5)
    state = obj["optimizer"]["state"][0]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"} and float(state["step"]) == 3
    assert type(obj["cfg"]) is dict and obj["cfg"]["SOLVER"]["STEPS"] == [2]
    assert obj["cfg"]["MODEL"]["SHIFT_CLASS_NEURON"] is False
    assert len(obj["best_val_stats"]) == 6 and obj["vis_win_names"]["val"]["epoch_eval"] == "val_eval_win"
    # the scheduler state resumes a real MultiStepLR (a Counter, not a dict: missing epochs read as 0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [9])
    sched.load_state_dict(obj["lr_scheduler"])
    sched.step()
    assert sched.milestones == {2: 1}


def test_the_detectron2_files_hold_what_the_checkpointer_saves(files):
    obj = safe_read(files["grattvis"].path)
    assert set(obj) == {"model", "trainer", "iteration"} and obj["iteration"] == 1
    trainer = obj["trainer"]
    assert trainer["hooks"]["LRScheduler"] == {
        "base_lrs": pytest.approx([1e-4] * len(trainer["hooks"]["LRScheduler"]["base_lrs"])),
        "last_epoch": 2,
    }
    assert trainer["_trainer"]["grad_scaler"]["scale"] == 65536.0
    groups = trainer["_trainer"]["optimizer"]["param_groups"]
    assert all(len(g["params"]) == 1 for g in groups)  # Mask2Former: one group per parameter
    old = safe_read(files["grattvis_old_trainer"].path)
    assert set(old) == {"model", "optimizer", "scheduler", "iteration"} and old["scheduler"][
        "milestones"
    ] == [1]
    pkl = safe_read(files["detectron2_imagenet"].path)
    assert pkl["__author__"] == "torchvision" and isinstance(
        pkl["model"]["res2.0.conv1.norm.weight"], np.ndarray
    )


@pytest.mark.parametrize("name", ALL)
def test_model_weights_loads_every_official_file(files, name, caplog):
    f = files[name]
    model = f.make_model()
    with caplog.at_level(logging.INFO, logger="vidseg.checkpoints"):
        text = str(load_weights(model, str(f.path)))
    _assert_loaded(model, f.expected)
    assert f"mapped {f.n_mapped} tensors" in text
    assert (f"({f.renamed} renamed" in text) == bool(f.renamed)
    assert f"left out {len(f.left_out)}" in text if f.left_out else "nothing left out" in text
    report = load_weights(f.make_model(), f.path)
    assert set(report.left_out) == f.left_out and len(report.mapped) == f.n_mapped
    for k in f.not_weights:
        assert k in text.split("not weights, not used:")[1]
    assert ("missing" not in text) == f.strict
    assert str(f.path) in caplog.text


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
@pytest.mark.parametrize("name", ALL)
def test_vidseg_convert_reads_every_official_file(files, name, fmt, tmp_path, capsys):
    f = files[name]
    dst = tmp_path / f"converted.{fmt}"
    assert main(["convert", str(f.path), str(dst), "--format", fmt]) == 0
    printed = capsys.readouterr().out
    assert f"mapped {f.n_mapped} tensors" in printed
    if f.left_out:
        assert f"left out {len(f.left_out)}" in printed
    if fmt == "pth":
        obj = torch.load(dst, weights_only=True)  # plain, safe format
    else:
        from safetensors import safe_open

        with safe_open(dst, framework="pt") as st:  # the hubs' reader sees the tensors and the provenance
            assert len(list(st.keys())) == f.n_mapped and st.metadata()["format"] == "pt"
        obj = safe_read(dst)
    assert obj["class_neuron_shifted"] is False and obj["source_file"] == f.path.name
    model = f.make_model()
    text = str(load_weights(model, str(dst)))
    _assert_loaded(model, f.expected)
    assert f"mapped {f.n_mapped} tensors" in text


def _rotated(t):
    return torch.cat([t[1:], t[:1]])


def test_shift_class_neuron_is_applied_to_a_deformable_detr_file_in_the_mask_head_model(files, caplog):
    f = files["deformable_detr"]
    model = f.make_model()
    with caplog.at_level(logging.INFO, logger="vidseg.checkpoints"):
        text = str(load_weights(model, str(f.path), shift_class_neuron=True))
    assert "class rows shifted in 12" in text  # 6 decoder layers x (weight, bias)
    assert "SHIFT_CLASS_NEURON" in caplog.text and "rotated" in caplog.text
    st = model.state_dict()
    for k, v in f.expected.items():
        assert torch.equal(st[k], _rotated(v) if "class_embed" in k else v), k


@pytest.mark.parametrize("name", ["devis_maskhead", "devis_video", "grattvis"])
def test_shift_class_neuron_never_touches_devis_or_detectron2_files(files, name, caplog):
    f = files[name]
    model = f.make_model()
    with caplog.at_level(logging.INFO, logger="vidseg.checkpoints"):
        text = str(load_weights(model, str(f.path), shift_class_neuron=True))
    _assert_loaded(model, f.expected)  # class rows untouched
    assert "shifted" not in text.split("SHIFT_CLASS_NEURON")[0]
    assert "SHIFT_CLASS_NEURON not applied" in text and "SHIFT_CLASS_NEURON not applied" in caplog.text


def test_shift_class_neuron_is_not_applied_on_the_video_path(files):
    # DeVIS's VIS branch (adapt_weights_devis) never shifts, even for a Deformable DETR file.
    f = files["deformable_detr"]
    ck = convert_checkpoint(f.path, shift_class_neuron=True, video_model=True)
    assert ck.shifted == [] and any("video model" in n for n in ck.notes)
    assert all(torch.equal(ck.state_dict[k], v) for k, v in f.expected.items())
    assert convert_checkpoint(f.path, shift_class_neuron=True).shifted  # the image model: shifted


def test_shift_happens_exactly_once_through_convert(files, tmp_path, capsys):
    f = files["deformable_detr"]
    once, never = tmp_path / "shifted.safetensors", tmp_path / "plain.safetensors"
    assert main(["convert", str(f.path), str(once), "--shift-class-neuron"]) == 0
    assert "class rows shifted in 12" in capsys.readouterr().out
    assert main(["convert", str(f.path), str(never)]) == 0
    assert safe_read(once)["class_neuron_shifted"] is True
    for path in (once, never):  # MODEL.SHIFT_CLASS_NEURON True on both: each ends up shifted once
        model = f.make_model()
        text = str(load_weights(model, str(path), shift_class_neuron=True))
        st = model.state_dict()
        for k, v in f.expected.items():
            assert torch.equal(st[k], _rotated(v) if "class_embed" in k else v), (path.name, k)
        assert ("not applied" in text) == (path == once)
    # and converting the shifted file again with the flag does not shift it twice
    twice = tmp_path / "twice.safetensors"
    assert main(["convert", str(once), str(twice), "--shift-class-neuron"]) == 0
    assert "SHIFT_CLASS_NEURON not applied" in capsys.readouterr().err
    a, b = safe_read(once)["model"], safe_read(twice)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["devis_legacy", "zip", "pkl"])
def test_code_running_globals_are_refused_with_a_way_out(tmp_path, kind, capsys):
    marker = tmp_path / "pwned"
    obj = {"model": {"w": torch.ones(2)}, "lr_scheduler": {"milestones": collections.Counter({3: 1})}}
    obj["extra"] = _RunsCode(marker)
    path = tmp_path / f"evil.{'pkl' if kind == 'pkl' else 'pth'}"
    if kind == "pkl":
        obj["model"] = {"w": np.ones(2)}
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=kind == "zip")
    with pytest.raises(UnsafeCheckpointError) as info:
        str(load_weights(module_tree({"w": (2,)}), str(path)))
    text = str(info.value)
    assert "posix.system" in text or "os.system" in text
    assert str(path) in text and "If you trust this file" in text and "weights_only=False" in text
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "system" in err and "If you trust this file" in err
    assert not marker.exists()


@pytest.mark.parametrize("name", ["detectron2_imagenet", "torchvision_resnet_legacy"])
def test_backbone_pretrained_reads_the_imagenet_files(files, name):
    from vidseg.backbones import build_backbone

    f = files[name]
    bb = build_backbone("resnet50", train_backbone=True, pretrained=str(f.path))
    st = bb.state_dict()
    for k, v in f.expected.items():
        assert torch.equal(st["body." + k[len(BODY) :]], v), k


def test_shift_is_reported_under_the_model_names_of_a_bare_detector(files, coco_shapes_tiny):
    f = files["deformable_detr"]
    bare = module_tree(_ddetr_shapes(coco_shapes_tiny), {"transformer.decoder.bbox_embed": "bbox_embed"})
    report = load_weights(bare, f.path, shift_class_neuron=True, strict=True)
    assert report.shifted and all(k.startswith("class_embed.") for k in report.shifted)
    assert report.renamed == {}  # the file's own names
    w = bare.state_dict()["class_embed.0.bias"]
    assert torch.equal(w, _rotated(f.expected["def_detr.class_embed.0.bias"]))
