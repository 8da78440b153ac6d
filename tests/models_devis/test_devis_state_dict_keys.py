"""The DeVIS video models reproduce the official state dicts, every name and shape (devis.md §8).

Built on the meta device: shapes and names without allocating 218 M Swin-L parameters.
"""

from pathlib import Path

import pytest
import torch

from vidseg.models import load_config
from vidseg.models.devis.build import build_devis_model

KEYS = Path(__file__).resolve().parents[1] / "spec_keys"


def _official(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / name).read_text().splitlines():
        key, shape = line.split(" ", 1)
        out[key] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return out


def _shapes(config: str, *opts: str) -> dict[str, tuple[int, ...]]:
    cfg = load_config(config, list(opts))
    with torch.device("meta"):
        model = build_devis_model(cfg, int(cfg.MODEL.NUM_CLASSES))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _compare(ours: dict, official: dict) -> None:
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: (ours[k], official[k]) for k in official if ours[k] != official[k]} == {}


def test_r50_yt19_matches_the_official_704_tensors():
    official = _official("devis-state-dict-keys-R50-YT19.txt")
    assert len(official) == 704
    _compare(_shapes("devis/YT-19/devis_R_50_YT-19.yaml"), official)


def test_swin_l_yt21_matches_the_official_796_tensors():
    official = _official("devis-state-dict-keys-SwinL-YT21.txt")
    assert len(official) == 796
    _compare(_shapes("devis/YT-21/devis_Swin_L_YT-21.yaml"), official)


def test_ablation0_deformable_vistr_has_678_tensors_with_the_3d_head():
    ours = _shapes("devis/ablations/devis_ablation0_deformable_vistr.yaml")
    assert len(ours) == 678
    r50 = _official("devis-state-dict-keys-R50-YT19.txt")
    # The 1-level model keeps the /32 projection as input_proj.0 and the /32 attention pair only.
    assert ours["def_detr.input_proj.0.0.weight"] == (256, 2048, 1, 1)
    assert not any(k.startswith("def_detr.input_proj.1.") for k in ours)
    assert ours["def_detr.transformer.level_embed"] == (1, 256)
    assert ours["def_detr.backbone.1.temporal_embed"] == (36, 256)
    assert ours["def_detr.query_embed.weight"] == (360, 512)
    enc = "def_detr.transformer.encoder.layers.0.self_attn."
    # 8 heads x 35 other frames x 1 level x 4 points (x 2 for offsets).
    assert ours[enc + "temporal_sampling_offsets.weight"] == (8 * 35 * 4 * 2, 256)
    assert ours[enc + "temporal_attention_weights.weight"] == (8 * 35 * 4, 256)
    heads3d = sorted({k.split(".")[1] for k in ours if k.startswith("conv_head_3d.")}, key=int)
    assert heads3d == ["0", "1", "3", "4", "6", "7", "9"]
    assert ours["conv_head_3d.0.weight"] == (12, 16, 3, 3, 3)
    assert ours["conv_head_3d.9.weight"] == (1, 12, 1, 1, 1)
    # Plain convs, no out_lay, backbone FPN inputs (1024 / 512 / 256 channels).
    assert "mask_head.out_lay.weight" not in ours and "mask_head.lay1.weight" in ours
    assert ours["mask_head.adapter1.weight"] == (128, 1024, 1, 1)
    assert ours["mask_head.adapter2.weight"] == (64, 512, 1, 1)
    assert sorted(k for k in ours if k.startswith("bbox_attention.")) == sorted(
        f"bbox_attention.{n}_linear.{p}" for n in "qk" for p in ("weight", "bias")
    )
    # Everything else is named as in the final model.
    common = [k for k in ours if k in r50]
    assert len(common) > 600


@pytest.mark.parametrize(
    "config,k_temp_names",
    [
        ("devis/ablations/devis_ablation1_deformable_vistr_wo_temp_conn.yaml", 0),
        ("devis/ablations/devis_ablation2-5_single-scale_wo_temp_conn.yaml", 0),
        ("devis/ablations/devis_ablation2_single-scale.yaml", 4 * 12),
    ],
)
def test_without_temporal_connections_there_are_no_temporal_tensors(config, k_temp_names):
    ours = _shapes(config)
    assert sum("_attn.temporal_" in k for k in ours) == k_temp_names
    assert "def_detr.backbone.1.temporal_embed" in ours


@pytest.mark.slow
def test_an_official_format_yt19_file_loads_strictly(tmp_path):
    """A file written as the official main.py writes it (legacy pickle, ``{"model": ...}``), with the official
    names and shapes, loads with ``strict=True`` and no stage-2 adaptation."""
    from vidseg.checkpoints import load_weights

    official = _official("devis-state-dict-keys-R50-YT19.txt")
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.rand(s, generator=g) for k, s in official.items()}
    # the official file holds the duplicated box heads as the same tensors
    for k in [k for k in sd if k.startswith("def_detr.transformer.decoder.bbox_embed.")]:
        sd[k] = sd[k.replace("transformer.decoder.", "")]
    path = tmp_path / "r50_devis_yt-19.pth"
    torch.save({"model": sd, "epoch": 9}, path, _use_new_zipfile_serialization=False)
    cfg = load_config("devis/YT-19/devis_R_50_YT-19.yaml")
    model = build_devis_model(cfg, 40)
    report = load_weights(model, path, strict=True)
    assert "devis_stage2" not in report.converted_from
    ours = model.state_dict()
    for k in (
        "def_detr.backbone.1.temporal_embed",
        "def_detr.query_embed.weight",
        "mask_head.out_lay.regular_conv.weight",
    ):
        assert torch.equal(ours[k], sd[k])
