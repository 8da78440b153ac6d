"""The R50 COCO image model reproduces the official DeVIS mask-head state dict: every name and shape."""

from pathlib import Path

import pytest
import torch

from vidseg.models import load_config
from vidseg.models.devis.build import build_deformable_detr_segm

KEYS_FILE = Path(__file__).resolve().parents[1] / "spec_keys" / "devis-state-dict-keys-maskhead-R50-COCO.txt"


def _official() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in KEYS_FILE.read_text().splitlines():
        name, shape = line.split(" ", 1)
        out[name] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return out


@pytest.fixture(scope="module")
def r50_state() -> dict[str, torch.Tensor]:
    cfg = load_config("deformable_mask_head/deformable_mask_head_R_50.yaml")
    model = build_deformable_detr_segm(cfg, num_classes=cfg.MODEL.NUM_CLASSES)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_ddetr_non_backbone_keys_and_shapes_match_official(r50_state):
    official = {k: v for k, v in _official().items() if ".backbone.0.body." not in k}
    ours = {k: v for k, v in r50_state.items() if ".backbone.0.body." not in k}
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    bad = {k: (ours[k], official[k]) for k in official if ours[k] != official[k]}
    assert bad == {}


def test_ddetr_full_state_dict_matches_official(r50_state):
    official = _official()
    assert len(official) == 655
    assert sorted(set(official) ^ set(r50_state)) == []
    assert {k: r50_state[k] for k in official if r50_state[k] != official[k]} == {}


def test_ddetr_duplicated_bbox_embed_keys_share_tensors():
    cfg = load_config("quickstart/deformable_mask_head_tiny.yaml", ["MODEL.NUM_CLASSES", "3"])
    model = build_deformable_detr_segm(cfg, 3)
    sd = model.state_dict()
    for i in range(cfg.MODEL.TRANSFORMER.DECODER_LAYERS):
        a = sd[f"def_detr.bbox_embed.{i}.layers.2.weight"]
        b = sd[f"def_detr.transformer.decoder.bbox_embed.{i}.layers.2.weight"]
        assert a.data_ptr() == b.data_ptr()
    # The only aliased entries are the decoder's copies of the box heads.
    n_dup = sum("transformer.decoder.bbox_embed" in k for k in sd)
    assert n_dup == 6 * cfg.MODEL.TRANSFORMER.DECODER_LAYERS
    assert len({v.data_ptr() for v in sd.values()}) == len(sd) - n_dup
