"""The toy VIS model, its criterion and inference, and the model registry."""

from types import SimpleNamespace

import pytest
import torch
from engine_standins import ShapesClips, ShapesVideos, collate
from pycocotools import mask as mask_util

from vidseg.models import METHODS, Method, build_model, get_cfg
from vidseg.structures.results import VideoResult


def _bundle(**kw):
    cfg = get_cfg("ToyVIS")
    cfg.MODEL.TOY.NUM_CLASSES = 2
    cfg.MODEL.TOY.NUM_QUERIES = 4
    cfg.MODEL.TOY.HIDDEN_DIM = 16
    for k, v in kw.items():
        setattr(cfg.MODEL.TOY, k, v)
    return build_model(cfg)


def test_outputs_losses_and_weights():
    b = _bundle(DEC_LAYERS=3)
    batch = collate([ShapesClips(4)[i] for i in range(2)])
    out = b.model(batch)
    assert out["pred_logits"].shape == (2, 4, 3)
    assert out["pred_masks"].shape == (2, 4, 2, 8, 8)  # [B, Q, T, H/4, W/4]
    assert len(out["aux_outputs"]) == 2
    losses = b.criterion(out, batch.targets)
    assert set(losses) == set(b.criterion.weight_dict)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_1"} <= set(losses)
    assert b.criterion.last_num_masks == float(sum(len(t) for t in batch.targets))


def test_toy_overfits_a_batch():
    torch.manual_seed(0)
    b = _bundle()
    batch = collate([ShapesClips(4)[i] for i in range(4)])
    opt = torch.optim.AdamW(b.model.parameters(), lr=3e-3)
    wd = b.criterion.weight_dict

    def total():
        losses = b.criterion(b.model(batch), batch.targets)
        return sum(wd[k] * v for k, v in losses.items())

    with torch.no_grad():
        first = float(total())
    for _ in range(40):
        opt.zero_grad()
        loss = total()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(total()) < 0.6 * first


def test_inference_on_a_video_item():
    b = _bundle(TOPK=3)
    clip = ShapesVideos(1, hw=32)[0]
    frames = clip.frames[0, :, :, :30, :28]  # an unpadded 30 x 28 video
    item = SimpleNamespace(
        video_id=7, frames=SimpleNamespace(all=lambda: frames), orig_size=(60, 56), image_size=(30, 28)
    )
    res = b.inference(b.model, item)
    assert isinstance(res, VideoResult) and (res.video_id, res.height, res.width) == (7, 60, 56)
    assert len(res.tracks) == 3 and all(0 <= t.score <= 1 and t.label in (0, 1) for t in res.tracks)
    for t in res.tracks:
        assert len(t.masks) == 3
        for rle in t.masks:
            assert rle is None or (rle["size"] == [60, 56] and mask_util.area(rle) > 0)
    with pytest.raises(TypeError, match="VideoItem or a ClipBatch"):
        b.inference(b.model, torch.zeros(3))


def _bad_add_config(cfg):
    pass


def _bad_build(cfg, metadata):
    return "not a bundle"


def test_registry_errors():
    cfg = get_cfg("ToyVIS")
    cfg.MODEL.META_ARCHITECTURE = "NoSuchMethod"
    with pytest.raises(KeyError, match="NoSuchMethod.*ToyVIS"):
        build_model(cfg)

    # A builder that returns something else than a ModelBundle is named.
    METHODS["_BadBuilderForTest"] = Method(__name__, "_bad_add_config", "_bad_build")
    try:
        cfg.MODEL.META_ARCHITECTURE = "_BadBuilderForTest"
        with pytest.raises(TypeError, match="expected ModelBundle"):
            build_model(cfg)
    finally:
        del METHODS["_BadBuilderForTest"]
    cfg = get_cfg("ToyVIS")
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_model(cfg)  # 0 classes and no dataset to read them from
