"""Mask2Former's pixel decoder, masked-attention decoder and model on tiny CPU inputs."""

from __future__ import annotations

import pytest
import torch

from vidseg.models import build_model, load_config
from vidseg.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from vidseg.models.mask2former.transformer_decoder import MaskedTransformerDecoder, attention_mask_from_masks
from vidseg.structures.clip_batch import ClipBatch

CH = {"res2": 8, "res3": 16, "res4": 24, "res5": 32}


def _features(b: int = 2, h: int = 64, w: int = 96) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        f: torch.randn(b, c, h // s, w // s, generator=g) for (f, c), s in zip(CH.items(), (4, 8, 16, 32))
    }


def _pixel_decoder(**kw) -> MSDeformAttnPixelDecoder:
    torch.manual_seed(0)
    return MSDeformAttnPixelDecoder(
        CH, conv_dim=32, mask_dim=16, num_layers=2, d_ffn=64, n_heads=4, n_points=2, impl="torch", **kw
    )


def test_pixel_decoder_returns_mask_features_the_raw_stride4_map_and_three_levels_coarse_first():
    dec = _pixel_decoder()
    out = dec(_features())
    assert out["mask_features"].shape == (2, 16, 16, 24)
    assert out["clip_mask_features"].shape == (2, 32, 16, 24)
    assert [tuple(x.shape[-2:]) for x in out["multi_scale_features"]] == [(2, 3), (4, 6), (8, 12)]
    # mask_features is the 1x1 conv of the raw map, not the raw map itself.
    ref = dec.mask_features(out["clip_mask_features"])
    torch.testing.assert_close(out["mask_features"], ref)
    # input_proj.0 projects res5 (coarse first, as in the official file).
    assert dec.input_proj[0][0].in_channels == 32 and dec.input_proj[2][0].in_channels == 16
    assert dec.transformer.level_embed.shape == (3, 32)


def test_pixel_decoder_stays_fp32_under_autocast_by_default_and_follows_it_when_asked():
    feats = _features()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp32 = _pixel_decoder()(feats)
        mixed = _pixel_decoder(force_fp32=False)(feats)
    assert all(t.dtype == torch.float32 for t in [fp32["mask_features"], *fp32["multi_scale_features"]])
    assert mixed["mask_features"].dtype == torch.bfloat16
    # Same weights (same seed): the bf16 run is close to the fp32 one, not equal.
    diff = (mixed["mask_features"].float() - fp32["mask_features"]).abs().max()
    assert 0 < diff < 0.5


def test_the_encoder_sees_every_level():
    """A change in res5 alone reaches the stride-4 output through the encoder and the FPN step."""
    dec = _pixel_decoder().eval()
    feats = _features()
    base = dec(feats)["clip_mask_features"]
    feats["res5"] = feats["res5"] + 1.0
    assert not torch.allclose(dec(feats)["clip_mask_features"], base)


def test_attention_mask_blocks_low_probabilities_and_unblocks_fully_blocked_rows():
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 0, :2] = 5.0  # query 0: top half foreground
    logits[0, 2] = 5.0  # query 2: everything foreground; query 1: nothing (fully blocked)
    mask = attention_mask_from_masks(logits, (4, 4), num_heads=2)
    assert mask.shape == (2, 3, 16) and mask.dtype == torch.bool
    for head in range(2):
        assert mask[head, 0, :8].logical_not().all() and mask[head, 0, 8:].all()
        assert not mask[head, 1].any(), "a fully blocked row attends everywhere instead"
        assert not mask[head, 2].any()
    # Resized to the next level (bilinear): still a [B*heads, Q, H*W] mask.
    assert attention_mask_from_masks(logits, (2, 2), 2).shape == (2, 3, 4)


def test_attention_mask_is_batch_major_over_heads():
    logits = torch.full((2, 1, 2, 2), -5.0)
    logits[1] = 5.0  # image 1 all foreground, image 0 all background (unblocked as a full row)
    logits[0, 0, 0, 0] = 5.0  # image 0: one pixel
    mask = attention_mask_from_masks(logits, (2, 2), num_heads=3)
    assert mask[:3, 0].sum(-1).tolist() == [3, 3, 3] and mask[3:].sum().item() == 0


def _decoder(**kw) -> MaskedTransformerDecoder:
    torch.manual_seed(0)
    return MaskedTransformerDecoder(
        in_channels=32,
        num_classes=5,
        hidden_dim=32,
        num_queries=7,
        nheads=4,
        dim_feedforward=64,
        dec_layers=5,
        mask_dim=16,
        **kw,
    )


def test_transformer_decoder_outputs_every_layer_and_the_frame_queries():
    pix = _pixel_decoder()(_features())
    dec = _decoder(num_frame_query_layers=3).train()
    out = dec(pix["multi_scale_features"], pix["mask_features"])
    assert out["pred_logits"].shape == (2, 7, 6)
    assert out["pred_masks"].shape == (2, 7, 16, 24)
    assert len(out["aux_outputs"]) == 4  # the initial queries + layers 0..2; layer 3 is the top level
    assert out["frame_queries"].shape == (3, 2, 7, 32)
    # The last frame query is decoder_norm of the last layer, what the class head reads.
    torch.testing.assert_close(dec.class_embed(out["frame_queries"][-1]), out["pred_logits"])
    assert dec.eval()(pix["multi_scale_features"], pix["mask_features"])["frame_queries"].shape == (
        1,
        2,
        7,
        32,
    )
    assert len(dec.input_proj) == 3 and not list(dec.input_proj.parameters())


def test_the_masks_of_a_layer_gate_the_next_cross_attention():
    """The first layer's cross-attention reads only where the initial prediction says foreground."""
    pix = _pixel_decoder()(_features(b=1))
    dec = _decoder().eval()
    seen = {}

    def hook(module, args, kwargs):
        seen.setdefault("mask", kwargs.get("attn_mask"))

    h = dec.transformer_cross_attention_layers[0].multihead_attn.register_forward_pre_hook(
        hook, with_kwargs=True
    )
    dec(pix["multi_scale_features"], pix["mask_features"])
    h.remove()
    _, _, masks, _ = dec.prediction_heads(dec.query_feat.weight[:, None], pix["mask_features"], (2, 3))
    torch.testing.assert_close(seen["mask"], attention_mask_from_masks(masks, (2, 3), 4))


def test_old_static_query_name_loads_into_query_feat():
    dec = _decoder()
    sd = dec.state_dict()
    sd["static_query.weight"] = sd.pop("query_feat.weight") + 1
    fresh = _decoder()
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.query_feat.weight, sd["static_query.weight"])


@pytest.mark.parametrize("frames", [1, 2])
def test_model_forward_backward_on_clips_of_frames(frames):
    cfg = load_config("quickstart/mask2former_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    bundle = build_model(cfg)
    x = torch.randn(2, frames, 3, 64, 64)
    out = bundle.model.train()(ClipBatch(frames=x, pad_mask=torch.zeros(2, frames, 64, 64, dtype=torch.bool)))
    n = 2 * frames
    assert out["pred_logits"].shape == (n, 10, 4) and out["pred_masks"].shape == (n, 10, 16, 16)
    assert out["frame_queries"].shape == (3, n, 10, 64)
    assert out["clip_mask_features"].shape == (n, 64, 16, 16)
    loss = out["pred_masks"].sum() + out["pred_logits"].sum() + out["frame_queries"].sum()
    loss.backward()
    p = bundle.model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].self_attn.value_proj.weight
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert bundle.model.backbone.body.conv1.weight.grad is not None  # FREEZE_AT 0: the stem trains too


def test_parameter_groups_follow_mask2former_optimizer_rule():
    cfg = load_config(
        "quickstart/mask2former_tiny.yaml",
        ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "SOLVER.BASE_LR", "0.0001", "SOLVER.WEIGHT_DECAY", "0.05"],
    )
    bundle = build_model(cfg)
    model = bundle.model
    groups = bundle.param_groups(model)
    where = {id(p): g for g in groups for p in g["params"]}
    assert len(where) == sum(1 for p in model.parameters() if p.requires_grad)
    pd = model.sem_seg_head.pixel_decoder
    pred = model.sem_seg_head.predictor
    assert where[id(model.backbone.body.conv1.weight)]["lr"] == pytest.approx(1e-5)  # BACKBONE_MULTIPLIER 0.1
    assert where[id(pd.input_proj[0][1].weight)]["weight_decay"] == 0.0  # GroupNorm: WEIGHT_DECAY_NORM
    assert where[id(pred.query_feat.weight)]["weight_decay"] == 0.0  # Embedding: WEIGHT_DECAY_EMBED
    assert where[id(pd.transformer.level_embed)]["weight_decay"] == 0.05  # a bare Parameter: decayed
    assert where[id(pred.class_embed.weight)] == {**where[id(pred.class_embed.weight)], "lr": 1e-4}
