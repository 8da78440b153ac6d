"""``vidseg convert --config-file``: an official-format file of each kind, holding a real (tiny) model's
weights under the official names and with the official top-level entries, is converted to ``.safetensors``;
the converted file loads strictly into a freshly built model, and that model gives the same outputs as the
original model (and as the original file loaded through ``MODEL.WEIGHTS``)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from official_files import (
    ddetr_args,
    devis_cfg,
    write_detectron2_imagenet_pkl,
    write_torchvision_resnet50,
)

from vidseg.checkpoints import CheckpointError, load_weights, safe_read, vidseg_to_detectron2
from vidseg.cli import main
from vidseg.models import build_model, load_config
from vidseg.structures.clip_batch import ClipBatch

H, W = 64, 96
DEVIS = ("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "3"])
IMAGE = ("quickstart/deformable_mask_head_tiny.yaml", ["MODEL.NUM_CLASSES", "3"])
M2F = ("quickstart/mask2former_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
GRATT = ("quickstart/grattvis_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
BODY = "def_detr.backbone.0.body."


def _model(config: tuple[str, list[str]], seed: int, extra: tuple[str, ...] = ()) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = load_config(config[0], [*config[1], "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *extra])
    return build_model(cfg).model.eval()


def _outputs(model: torch.nn.Module, frames: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = ClipBatch(
        frames=torch.randn(1, frames, 3, H, W, generator=g),
        pad_mask=torch.zeros(1, frames, H, W, dtype=torch.bool),
        meta=[{"orig_size": (H, W), "image_size": (H, W)}],
    )
    with torch.no_grad():
        out = model(batch)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def _convert(src, dst, config, capsys, extra: tuple[str, ...] = ()) -> str:
    args = [
        "convert",
        str(src),
        str(dst),
        "--config-file",
        config[0],
        *config[1],
        "MODEL.DEVICE",
        "cpu",
        *extra,
    ]
    assert main(args) == 0
    return capsys.readouterr().out


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, frames: int) -> None:
    out_a, out_b = _outputs(a, frames), _outputs(b, frames)
    assert set(out_a) == set(out_b) and "pred_logits" in out_a
    for k in out_a:
        torch.testing.assert_close(out_b[k], out_a[k], rtol=0, atol=0, msg=k)


def _devis_file(path, model, video: bool) -> None:
    """DeVIS ``main.py``'s checkpoint: legacy pickle with optimizer, scheduler, epoch, frozen yacs cfg."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2])
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "epoch": 3,
        "cfg": devis_cfg(video),
        "vis_win_names": {"train": {"iter_metrics": "w"}},
        "best_val_stats": None,
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize(
    "video", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["devis_video", "devis_maskhead"]
)
def test_devis_files_convert_load_strictly_and_give_the_same_outputs(tmp_path, capsys, video):
    config = DEVIS if video else IMAGE
    original = _model(config, seed=1)
    src, dst = tmp_path / "official.pth", tmp_path / "converted.safetensors"
    _devis_file(src, original, video)
    printed = _convert(src, dst, config, capsys)
    assert ("devis_video" if video else "devis_maskhead") in printed and "nothing left out" in printed
    meta = safe_read(dst)
    assert meta["config"]["MODEL"]["META_ARCHITECTURE"] == ("DeVIS" if video else "DeformableDETRSegm")
    assert meta["source_file"] == "official.pth"
    fresh = _model(config, seed=2)
    report = load_weights(fresh, dst, strict=True)
    assert report.ok and report.converted_from == "vidseg"
    _same_outputs(original, fresh, 3 if video else 1)


@pytest.mark.slow
def test_a_deformable_detr_file_converts_and_gives_the_same_outputs_as_the_original_file(tmp_path, capsys):
    """D-DETR has no mask head: the converted file holds the detector; the mask head stays as built."""
    donor = _model(IMAGE, seed=1)
    sd = {k[len("def_detr.") :]: v for k, v in donor.state_dict().items() if k.startswith("def_detr.")}
    src, dst = tmp_path / "r50_deformable_detr_plus_iterative_bbox_refinement.pth", tmp_path / "c.safetensors"
    torch.save({"model": sd, "optimizer": {}, "lr_scheduler": {}, "epoch": 49, "args": ddetr_args()}, src)
    printed = _convert(src, dst, IMAGE, capsys, ("MODEL.SHIFT_CLASS_NEURON", "True"))
    assert "format=deformable_detr" in printed and "class rows shifted" in printed
    assert "missing" in printed  # the mask head (bbox_attention, mask_head): not in the file, not written
    written = safe_read(dst)["model"]
    assert written and not any(k.startswith(("bbox_attention.", "mask_head.")) for k in written)
    via_original, via_converted = _model(IMAGE, seed=3), _model(IMAGE, seed=3)
    load_weights(via_original, src, shift_class_neuron=True)
    report = load_weights(via_converted, dst, shift_class_neuron=True)  # shifted once, at conversion
    assert report.shifted == [] and all(
        k.startswith(("bbox_attention.", "mask_head.")) for k in report.missing
    )
    _same_outputs(via_original, via_converted, 1)


@pytest.mark.slow  # the detectron2 format runs always in the GRAtt-VIS test (its detector is this model)
@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_a_detectron2_mask2former_file_converts_to_vidseg_names(tmp_path, capsys, kind):
    original = _model(M2F, seed=1)
    sd = vidseg_to_detectron2(original.state_dict())
    sd["criterion.empty_weight"] = torch.ones(4)
    src, dst = tmp_path / f"model_final.{kind}", tmp_path / "converted.safetensors"
    if kind == "pth":  # fvcore Checkpointer.save under DefaultTrainer
        torch.save({"model": sd, "trainer": {"iteration": 9}, "iteration": 9}, src)
    else:  # Mask2Former's released model_final_*.pkl: numpy arrays, the old query name
        sd["sem_seg_head.predictor.static_query.weight"] = sd.pop("sem_seg_head.predictor.query_feat.weight")
        with open(src, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "Mask2Former"}, f)
    printed = _convert(src, dst, M2F, capsys)
    assert "format=detectron2" in printed and "criterion.empty_weight" in printed  # dropped, and said so
    written = safe_read(dst)["model"]
    assert "backbone.body.layer1.0.conv1.weight" in written and "backbone.res2.0.conv1.weight" not in written
    fresh = _model(M2F, seed=2)
    assert load_weights(fresh, dst, strict=True).ok
    _same_outputs(original, fresh, 1)


@pytest.mark.parametrize("method", ["grattvis", pytest.param("vita", marks=pytest.mark.slow)])
def test_a_grattvis_or_vita_file_converts_and_gives_the_same_outputs(tmp_path, capsys, method):
    """GRAtt-VIS's own file loads strictly after conversion; a VITA file (no ``prop_instance``) gives a
    file without it, which loads into GRAtt-VIS with only ``prop_instance`` missing (it starts fresh)."""
    original = _model(GRATT, seed=1)
    sd = vidseg_to_detectron2(original.state_dict())
    sd["vita_criterion.empty_weight"] = torch.ones(4)
    if method == "vita":
        sd = {k: v for k, v in sd.items() if not k.startswith("vita_module.prop_instance.")}
    src, dst = tmp_path / f"{method}_r50_ovis.pth", tmp_path / "converted.safetensors"
    torch.save({"model": sd, "trainer": {"iteration": 9}, "iteration": 9}, src)  # fvcore's layout
    printed = _convert(src, dst, GRATT, capsys)
    assert "format=detectron2" in printed and "vita_criterion.empty_weight" in printed
    fresh = _model(GRATT, seed=2)
    if method == "grattvis":
        assert load_weights(fresh, dst, strict=True).ok
        _same_outputs(original, fresh, 3)
    else:
        report = load_weights(fresh, dst)
        assert report.missing and all(".prop_instance." in k for k in report.missing)
        state = fresh.state_dict()
        assert all(
            torch.equal(state[k], v) for k, v in original.state_dict().items() if ".prop_instance." not in k
        )


def _torchvision_resnet18(seed: int) -> dict[str, torch.Tensor]:
    """``torchvision.models.resnet18().state_dict()``: the body's names plus ``fc`` and BN batch counters."""
    body = _model(DEVIS, seed=seed).state_dict()
    sd: dict[str, torch.Tensor] = {}
    for k, v in body.items():
        if k.startswith(BODY):
            sd[k[len(BODY) :]] = v
            if k.endswith("running_var"):
                sd[k[len(BODY) :].replace("running_var", "num_batches_tracked")] = torch.tensor(9)
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    return sd


@pytest.mark.parametrize(
    "kind", ["torchvision_resnet", pytest.param("detectron2_imagenet", marks=pytest.mark.slow)]
)
def test_imagenet_resnet_files_convert_into_the_backbone(tmp_path, capsys, kind):
    tv = _torchvision_resnet18(seed=5)
    src = tmp_path / ("resnet18.pth" if kind == "torchvision_resnet" else "R-18.pkl")
    if kind == "torchvision_resnet":
        write_torchvision_resnet50(src, tv, legacy=False)
    else:
        write_detectron2_imagenet_pkl(src, tv)
    dst = tmp_path / "backbone.safetensors"
    printed = _convert(src, dst, DEVIS, capsys)
    assert f"format={kind}" in printed
    dropped = next(line for line in printed.splitlines() if "dropped on purpose" in line)
    assert "fc.weight" in dropped and "num_batches_tracked (x" in dropped  # every left-out name, and why
    kept = {k: v for k, v in tv.items() if not k.startswith("fc.") and "num_batches" not in k}
    written = safe_read(dst)["model"]
    assert set(written) == {BODY + k for k in kept}
    fresh = _model(DEVIS, seed=2)
    report = load_weights(fresh, dst)
    assert sorted(report.mapped) == sorted(written) and report.missing  # only the backbone is in the file
    state = fresh.state_dict()
    for k, v in kept.items():
        assert torch.equal(state[BODY + k], v), k


@pytest.mark.slow
def test_an_original_swin_file_converts_into_a_swin_backbone(tmp_path, capsys):
    from vidseg.backbones import build_backbone

    torch.manual_seed(6)
    donor = build_backbone("swin_t_p4w7", train_backbone=True)
    body = {k[len("body.") :]: v for k, v in donor.state_dict().items() if k.startswith("body.")}
    # The original release: {"model": ...} with the classification head and final norm, no per-stage norms.
    official = {k: v for k, v in body.items() if not k.startswith(("norm0", "norm1", "norm2", "norm3"))}
    official.update({"norm.weight": torch.ones(768), "norm.bias": torch.zeros(768)})
    official.update({"head.weight": torch.zeros(1000, 768), "head.bias": torch.zeros(1000)})
    src, dst = tmp_path / "swin_tiny_patch4_window7_224.pth", tmp_path / "swin.safetensors"
    torch.save({"model": official}, src)
    printed = _convert(src, dst, DEVIS, capsys, ("MODEL.BACKBONE", "swin_t_p4w7"))
    assert "format=swin_imagenet" in printed and "dropped" in printed
    fresh = _model(DEVIS, seed=2, extra=("MODEL.BACKBONE", "swin_t_p4w7"))
    report = load_weights(fresh, dst)
    state = fresh.state_dict()
    for k, v in official.items():
        if not k.startswith(("head.", "norm.")) and not k.endswith(("attn_mask", "relative_position_index")):
            assert torch.equal(state[BODY + k], v), k
    assert all(BODY in k or not k.startswith("def_detr.backbone.0.") for k in report.mapped)


def test_a_mask2former_swin_pkl_is_read_safely_as_original_swin_names(tmp_path):
    """Mask2Former's ``convert-pretrained-swin-model-to-d2.py``: ``pickle.dump`` of torch tensors (each
    storage the bytes of a small torch file) with ``__author__``; inner bytes are read ``weights_only``."""
    from vidseg.checkpoints import convert_checkpoint

    sd = {"patch_embed.proj.weight": torch.rand(4, 3, 4, 4), "layers.0.blocks.0.norm1.weight": torch.rand(4)}
    sd["head.weight"] = torch.rand(10, 4)
    path = tmp_path / "swin_tiny_patch4_window7_224.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": sd, "__author__": "third_party", "matching_heuristics": True}, f)
    ck = convert_checkpoint(path)
    assert ck.format == "swin_imagenet" and ck.dropped == ["head.weight"]
    assert all(torch.equal(ck.state_dict[k], sd[k]) for k in ck.state_dict)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    class Storage:  # what torch writes for a storage, with a code-running global inside the bytes
        def __reduce__(self):
            import torch.storage

            return (torch.storage._load_from_bytes, (pickle.dumps(Evil(), protocol=2),))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"patch_embed.proj.weight": Storage()}, "__author__": "x"}, f)
    with pytest.raises(CheckpointError, match="evil.pkl"):
        safe_read(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
