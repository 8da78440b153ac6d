"""DeVIS stage-2 adaptation (COCO image model -> video model) on state dicts."""

import math

import pytest
import torch
from conftest import TIE, module_tree, random_state_dict

from vidseg.checkpoints import COCO_TO_YTVIS19_CLASS_MAP, adapt_coco_to_devis, load_weights, write_weights

ENC0 = "def_detr.transformer.encoder.layers.0.self_attn."
DEC3 = "def_detr.transformer.decoder.layers.3.cross_attn."


def test_coco_to_yt19_gives_the_official_video_names_and_shapes(coco_shapes_tiny, coco_shapes, yt19_shapes):
    # Full shapes only where the level/point layout matters (attention tensors); the rest tiny.
    shapes = {
        k: coco_shapes[k] if ("_attn." in k or "level_embed" in k) else s for k, s in coco_shapes_tiny.items()
    }
    shapes["def_detr.query_embed.weight"] = coco_shapes["def_detr.query_embed.weight"]
    sd = random_state_dict(shapes)
    out = adapt_coco_to_devis(sd, num_frames=6, num_queries=60, num_classes=40)
    assert set(out) == set(yt19_shapes)
    for k in (
        "def_detr.query_embed.weight",
        "def_detr.class_embed.2.weight",
        "def_detr.backbone.1.temporal_embed",
    ):
        assert tuple(out[k].shape) == yt19_shapes[k], k
    for k in out:
        if ".temporal_" in k or "_attn." in k:
            assert tuple(out[k].shape) == yt19_shapes[k], k


def test_temporal_modules_copy_the_spatial_ones_per_frame():
    g = torch.Generator().manual_seed(0)
    sd = {
        "def_detr.transformer.level_embed": torch.randn(4, 256, generator=g),
        ENC0 + "sampling_offsets.weight": torch.randn(256, 256, generator=g),
        ENC0 + "sampling_offsets.bias": torch.randn(256, generator=g),
        DEC3 + "attention_weights.weight": torch.randn(128, 256, generator=g),
        DEC3 + "attention_weights.bias": torch.randn(128, generator=g),
        "def_detr.query_embed.weight": torch.randn(300, 512, generator=g),
    }
    out = adapt_coco_to_devis(sd, num_frames=6, num_queries=60, dec_points_temporal=2)
    tso = out[ENC0 + "temporal_sampling_offsets.weight"].view(8, 5, 4, 4, 2, 256)
    spatial = sd[ENC0 + "sampling_offsets.weight"].view(8, 4, 4, 2, 256)
    for j in range(5):  # every other frame starts with the spatial offsets
        assert torch.equal(tso[:, j], spatial)
    taw = out[DEC3 + "temporal_attention_weights.bias"].view(8, 5, 4, 2)
    assert torch.equal(taw[:, 4], sd[DEC3 + "attention_weights.bias"].view(8, 4, 4)[:, :, :2])
    assert torch.equal(out[ENC0 + "sampling_offsets.weight"], sd[ENC0 + "sampling_offsets.weight"])
    assert out["def_detr.query_embed.weight"].shape == (60, 512)
    assert not any("class_embed" in k for k in out)  # num_classes=None: the model keeps its own init
    no_temporal = adapt_coco_to_devis(sd, num_frames=6, num_queries=60, finetune_temporal_modules=False)
    assert not any("_attn.temporal_" in k for k in no_temporal)


def test_single_level_takes_the_32_projection_and_slices_levels():
    sd = {
        "def_detr.transformer.level_embed": torch.arange(8.0).view(4, 2),
        ENC0 + "attention_weights.weight": torch.arange(128.0 * 2).view(128, 2),
        ENC0 + "attention_weights.bias": torch.arange(128.0),
    }
    for i, ch in enumerate((512, 1024, 2048, 2048)):
        sd[f"def_detr.input_proj.{i}.0.weight"] = torch.full((4, ch, 1, 1), float(i))
        sd[f"def_detr.input_proj.{i}.1.weight"] = torch.full((4,), float(i))
    out = adapt_coco_to_devis(sd, num_frames=3, num_queries=6, num_levels=1, n_heads=8)
    assert out["def_detr.transformer.level_embed"].tolist() == [[0.0, 1.0]]
    assert out["def_detr.input_proj.0.0.weight"].shape == (4, 2048, 1, 1)
    assert (out["def_detr.input_proj.0.0.weight"] == 2).all()
    assert not any(k.startswith(("def_detr.input_proj.1", "def_detr.input_proj.2")) for k in out)
    assert out[ENC0 + "attention_weights.bias"].tolist() == [h * 16 + p for h in range(8) for p in range(4)]
    assert out[ENC0 + "temporal_attention_weights.bias"].shape == (8 * 2 * 1 * 4,)


def test_class_logits_and_query_finetuning():
    sd = {
        "def_detr.transformer.level_embed": torch.zeros(4, 8),
        "def_detr.class_embed.0.weight": torch.arange(91.0)[:, None].repeat(1, 8),
        "def_detr.class_embed.0.bias": torch.arange(91.0),
        "def_detr.query_embed.weight": torch.arange(300.0)[:, None].repeat(1, 16),
    }
    out = adapt_coco_to_devis(
        sd,
        num_frames=2,
        num_queries=20,
        num_classes=40,
        finetune_class_logits=True,
        finetune_query_embeds=True,
    )
    bias = out["def_detr.class_embed.0.bias"]
    assert bias[0] == 0  # YT-VIS "person" <- COCO category 1 (row 0)
    assert bias[4] == 40  # YT-VIS class 4 <- COCO category 41
    assert bias[1] == pytest.approx(-math.log(99))  # no COCO equivalent: fresh init
    assert len(COCO_TO_YTVIS19_CLASS_MAP) == 40
    q = out["def_detr.query_embed.weight"][:, 0].tolist()
    assert q == [float(i) for i in range(0, 300, 30)] * 2  # every 30th COCO query, tiled over 2 frames
    with pytest.raises(ValueError, match="divisible"):
        adapt_coco_to_devis(sd, num_frames=3, num_queries=20)


def test_load_weights_adapts_coco_into_a_video_model(tmp_path, coco_shapes, yt19_shapes):
    # names and shapes of the real files, attention tensors at full size, the rest tiny
    def shrink(shapes):
        keep = ("_attn.", "level_embed", "query_embed", "class_embed", "temporal_embed")
        return {k: s if any(p in k for p in keep) else tuple(min(d, 2) for d in s) for k, s in shapes.items()}

    sd = random_state_dict(shrink(coco_shapes))
    path = tmp_path / "coco.pth"
    write_weights(path, sd, config={})
    video = module_tree(shrink(yt19_shapes), TIE)
    report = load_weights(video, path, strict=True)
    assert report.converted_from == "vidseg+devis_stage2"
    st = video.state_dict()
    k = "def_detr.transformer.decoder.layers.5.cross_attn.temporal_sampling_offsets.bias"
    spatial = sd["def_detr.transformer.decoder.layers.5.cross_attn.sampling_offsets.bias"].view(8, 4, 4, 2)
    assert torch.equal(st[k].view(8, 5, 4, 4, 2)[:, 2], spatial)
    assert torch.equal(st["mask_head.gn3.weight"], sd["mask_head.gn3.weight"])
    assert st["def_detr.class_embed.0.bias"].shape == (40,)
