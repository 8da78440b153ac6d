"""Mask head: official names/shapes (R50, Swin-L), attention maps, shapes, per-image independence."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from vidseg.models.devis.build import build_mask_head
from vidseg.models.devis.mask_head import (
    MaskHeadConv,
    MultiScaleMHAttentionMap,
    run_mask_head,
    select_mask_head_features,
)

SPEC_FILE = os.path.join(
    os.path.dirname(__file__), "..", "spec_keys", "devis-state-dict-keys-maskhead-R50-COCO.txt"
)

# The bbox_attention/mask_head lines of the official R50 COCO mask-head state dict (spec key list).
R50_KEYS = """
bbox_attention.q_linear.weight (256, 256)
bbox_attention.q_linear.bias (256,)
bbox_attention.k_linear.weight (256, 256)
bbox_attention.k_linear.bias (256,)
bbox_attention.q_linear_1.weight (256, 256)
bbox_attention.q_linear_1.bias (256,)
bbox_attention.k_linear_1.weight (256, 256)
bbox_attention.k_linear_1.bias (256,)
bbox_attention.q_linear_2.weight (256, 256)
bbox_attention.q_linear_2.bias (256,)
bbox_attention.k_linear_2.weight (256, 256)
bbox_attention.k_linear_2.bias (256,)
mask_head.lay1.offset_conv.weight (18, 264, 3, 3)
mask_head.lay1.offset_conv.bias (18,)
mask_head.lay1.modulator_conv.weight (9, 264, 3, 3)
mask_head.lay1.modulator_conv.bias (9,)
mask_head.lay1.regular_conv.weight (264, 264, 3, 3)
mask_head.gn1.weight (264,)
mask_head.gn1.bias (264,)
mask_head.lay2.offset_conv.weight (18, 264, 3, 3)
mask_head.lay2.offset_conv.bias (18,)
mask_head.lay2.modulator_conv.weight (9, 264, 3, 3)
mask_head.lay2.modulator_conv.bias (9,)
mask_head.lay2.regular_conv.weight (128, 264, 3, 3)
mask_head.gn2.weight (128,)
mask_head.gn2.bias (128,)
mask_head.lay3.offset_conv.weight (18, 136, 3, 3)
mask_head.lay3.offset_conv.bias (18,)
mask_head.lay3.modulator_conv.weight (9, 136, 3, 3)
mask_head.lay3.modulator_conv.bias (9,)
mask_head.lay3.regular_conv.weight (64, 136, 3, 3)
mask_head.gn3.weight (64,)
mask_head.gn3.bias (64,)
mask_head.adapter1.weight (128, 256, 1, 1)
mask_head.adapter1.bias (128,)
mask_head.lay4.offset_conv.weight (18, 72, 3, 3)
mask_head.lay4.offset_conv.bias (18,)
mask_head.lay4.modulator_conv.weight (9, 72, 3, 3)
mask_head.lay4.modulator_conv.bias (9,)
mask_head.lay4.regular_conv.weight (32, 72, 3, 3)
mask_head.gn4.weight (32,)
mask_head.gn4.bias (32,)
mask_head.adapter2.weight (64, 256, 1, 1)
mask_head.adapter2.bias (64,)
mask_head.lay5.offset_conv.weight (18, 32, 3, 3)
mask_head.lay5.offset_conv.bias (18,)
mask_head.lay5.modulator_conv.weight (9, 32, 3, 3)
mask_head.lay5.modulator_conv.bias (9,)
mask_head.lay5.regular_conv.weight (16, 32, 3, 3)
mask_head.gn5.weight (16,)
mask_head.gn5.bias (16,)
mask_head.adapter3.weight (32, 256, 1, 1)
mask_head.adapter3.bias (32,)
mask_head.out_lay.offset_conv.weight (18, 16, 3, 3)
mask_head.out_lay.offset_conv.bias (18,)
mask_head.out_lay.modulator_conv.weight (9, 16, 3, 3)
mask_head.out_lay.modulator_conv.bias (9,)
mask_head.out_lay.regular_conv.weight (1, 16, 3, 3)
"""


def _parse(text: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in text.strip().splitlines():
        name, shape = line.split(" ", 1)
        out[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def _heads(c4: int = 256, use_mdc: bool = True) -> nn.Module:
    model = nn.Module()
    model.bbox_attention = MultiScaleMHAttentionMap(256, 256, 8, num_levels=3)
    model.mask_head = MaskHeadConv(256, (256, 256, c4), 8, num_att_levels=3, use_mdc=use_mdc)
    return model


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_official_r50_names_and_shapes():
    expected = _parse(R50_KEYS)
    assert len(expected) == 58
    assert _shapes(_heads()) == expected
    if os.path.isfile(SPEC_FILE):  # the embedded list is a verbatim copy of the spec's
        with open(SPEC_FILE) as f:
            spec = _parse("".join(ln for ln in f if ln.startswith(("bbox_attention.", "mask_head."))))
        assert spec == expected


def test_swin_variant_adapter3_takes_192_channels():
    shapes = _shapes(_heads(c4=192))
    assert shapes["mask_head.adapter3.weight"] == (32, 192, 1, 1)
    expected = _parse(R50_KEYS)
    expected["mask_head.adapter3.weight"] = (32, 192, 1, 1)
    assert shapes == expected


def test_plain_conv_names():
    keys = set(_heads(use_mdc=False).state_dict())
    assert {f"mask_head.lay{i}.{p}" for i in range(1, 6) for p in ("weight", "bias")} <= keys
    assert {"mask_head.out_lay.weight", "mask_head.out_lay.bias"} <= keys
    assert not any("offset_conv" in k for k in keys)


def _inputs(b=2, n=3, h=64, w=96, c4=256):
    q = torch.randn(b, n, 256)
    mems = [torch.randn(b, 256, h // s, w // s) for s in (32, 16, 8)]
    masks = [torch.zeros(b, h // s, w // s, dtype=torch.bool) for s in (32, 16, 8)]
    feats = [mems[0], mems[1], mems[2], torch.randn(b, c4, h // 4, w // 4)]
    return q, mems, masks, feats


@pytest.mark.parametrize("use_mdc", [False, True])
def test_mask_logits_at_quarter_resolution_and_backward(use_mdc):
    model = _heads(use_mdc=use_mdc)
    q, mems, masks, feats = _inputs()
    q.requires_grad_(True)
    out = run_mask_head(model.bbox_attention, model.mask_head, q, mems, masks, feats)
    assert out.shape == (2, 3, 16, 24)
    out.square().mean().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert model.mask_head.lay1.regular_conv.weight.grad is not None if use_mdc else True


def test_attention_maps_softmax_over_heads_and_pixels_with_padding():
    att = MultiScaleMHAttentionMap(256, 256, 8, num_levels=3)
    q, mems, masks, _ = _inputs()
    masks[0][1, :, -1] = True  # pad the last /32 column of image 1
    maps = att(q, mems, masks)
    assert [tuple(m.shape) for m in maps] == [(2, 3, 8, 2, 3), (2, 3, 8, 4, 6), (2, 3, 8, 8, 12)]
    for m in maps:
        torch.testing.assert_close(m.flatten(2).sum(-1), torch.ones(2, 3))
    assert maps[0][1, :, :, :, -1].abs().max() == 0
    assert maps[0][0, :, :, :, -1].min() > 0


def test_attention_logits_match_an_explicit_per_head_computation():
    att = MultiScaleMHAttentionMap(16, 16, 4, num_levels=1)
    q = torch.randn(1, 2, 16)
    mem = torch.randn(1, 16, 3, 2)
    maps = att(q, [mem])[0]  # [1, 2, 4, 3, 2]
    qp = att.q_linear(q)[0] / 2.0  # (16 / 4) ** -0.5
    kp = att.k_linear(mem[0].permute(1, 2, 0))  # [3, 2, 16]
    logits = torch.einsum("nhc,yxhc->nhyx", qp.view(2, 4, 4), kp.view(3, 2, 4, 4))
    ref = F.softmax(logits.flatten(1), -1).view(2, 4, 3, 2)
    torch.testing.assert_close(maps[0], ref)


def test_images_of_a_batch_are_independent():
    # The video model runs frames as the batch: each frame's masks must not depend on the other frames.
    model = _heads(use_mdc=False)
    q, mems, masks, feats = _inputs(b=3, n=2)
    full = run_mask_head(model.bbox_attention, model.mask_head, q, mems, masks, feats)
    for b in range(3):
        one = run_mask_head(
            model.bbox_attention, model.mask_head, q[b : b + 1], [m[b : b + 1] for m in mems],
            [m[b : b + 1] for m in masks], [f[b : b + 1] for f in feats],
        )  # fmt: skip
        torch.testing.assert_close(full[b : b + 1], one, rtol=1e-4, atol=1e-5)


def test_mdc_head_equals_plain_head_at_initialisation():
    # Zero offsets and modulation 2*sigmoid(0) = 1: each MDC is its regular conv (no bias).
    mdc, plain = _heads(use_mdc=True), _heads(use_mdc=False)
    sd = {}
    for k, v in mdc.state_dict().items():
        if "offset_conv" in k or "modulator_conv" in k:
            continue
        sd[k.replace(".regular_conv", "")] = v
    for k, v in plain.state_dict().items():
        if k not in sd:
            sd[k] = torch.zeros_like(v)  # conv biases: the MDC convs have none
    plain.load_state_dict(sd)
    q, mems, masks, feats = _inputs(b=1, n=2, h=32, w=64)
    a = run_mask_head(mdc.bbox_attention, mdc.mask_head, q, mems, masks, feats)
    b = run_mask_head(plain.bbox_attention, plain.mask_head, q, mems, masks, feats)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_single_attention_level_head_without_out_layer():
    # Deformable VisTR ablation: attention only at /32, FPN over backbone /16, /8, /4, no out layer.
    head = MaskHeadConv(256, (1024, 512, 256), 8, num_att_levels=1, use_mdc=False, out_layer=False)
    shapes = _shapes(head)
    assert shapes["adapter1.weight"] == (128, 1024, 1, 1) and shapes["lay3.weight"] == (64, 128, 3, 3)
    assert "out_lay.weight" not in shapes
    att = MultiScaleMHAttentionMap(256, 256, 8, num_levels=1)
    q = torch.randn(1, 2, 256)
    mem = torch.randn(1, 256, 2, 2)
    feats = [mem, torch.randn(1, 1024, 4, 4), torch.randn(1, 512, 8, 8), torch.randn(1, 256, 16, 16)]
    assert head(feats, att(q, [mem])).shape == (1, 2, 16, 16, 16)


def _cfg(use_mdc=False):
    cfg = CN()
    cfg.MODEL = CN({"HIDDEN_DIM": 256})
    cfg.MODEL.TRANSFORMER = CN({"N_HEADS": 8})
    cfg.MODEL.MASK_HEAD = CN(
        {
            "USE_MDC": use_mdc,
            "UPSAMPLING_RESOLUTIONS": ["/32", "/16", "/8"],
            "USED_FEATURES": [["/32", "encoded"], ["/16", "encoded"], ["/8", "encoded"], ["/4", "backbone"]],
        }
    )
    return cfg


def test_build_from_config_and_feature_selection():
    channels = {"res2": 192, "res3": 384, "res4": 768, "res5": 1536}
    att, head = build_mask_head(_cfg(use_mdc=True), channels)
    assert head.adapter3.weight.shape == (32, 192, 1, 1) and hasattr(head.lay1, "offset_conv")
    assert att.num_levels == 3
    sizes = {"res2": 32, "res3": 16, "res4": 8, "res5": 4}
    backbone = {k: torch.randn(1, c, sizes[k], sizes[k]) for k, c in channels.items()}
    memories = [torch.randn(1, 256, s, s) for s in (8, 4, 2, 1)]  # /8, /16, /32, /64
    feats = select_mask_head_features(_cfg().MODEL.MASK_HEAD.USED_FEATURES, backbone, memories)
    assert feats[0] is memories[2] and feats[1] is memories[1] and feats[2] is memories[0]
    assert feats[3] is backbone["res2"]
    with pytest.raises(ValueError, match="unknown kind"):
        select_mask_head_features([["/8", "foo"]], backbone, memories)
    bad = _cfg()
    bad.MODEL.MASK_HEAD.USED_FEATURES = [["/16", "encoded"], ["/8", "encoded"]]
    with pytest.raises(ValueError, match="UPSAMPLING_RESOLUTIONS"):
        build_mask_head(bad, channels)


def test_mdc_head_current_path_matches_the_former_one_forward_and_backward():
    """The chunked project/gather deformable convs give the former whole-batch grid_sample results and
    gradients (random offsets and modulation, several instances per image; float64 so that the comparison
    is tight)."""
    from vidseg.ops import ModulatedDeformConv2d

    torch.manual_seed(0)
    model = _heads(use_mdc=True).double()
    for m in model.mask_head.modules():
        if isinstance(m, ModulatedDeformConv2d):
            nn.init.normal_(m.offset_conv.weight, std=0.05)
            nn.init.normal_(m.offset_conv.bias, std=1.0)
            nn.init.normal_(m.modulator_conv.weight, std=0.05)
    q, mems, masks, feats = _inputs(b=2, n=3)
    q, mems, feats = q.double(), [m.double() for m in mems], [f.double() for f in feats]
    results = {}
    for method, chunk in (("legacy", 2**30), ("auto", 2**30), ("auto", 1)):
        for m in model.mask_head.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.method, m.max_chunk_bytes = method, chunk
        model.zero_grad()
        out = run_mask_head(model.bbox_attention, model.mask_head, q, mems, masks, feats)
        out.square().mean().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results[(method, chunk)] = (out.detach(), grads)
    ref_out, ref_grads = results[("legacy", 2**30)]
    for key in (("auto", 2**30), ("auto", 1)):
        out, grads = results[key]
        torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-10)
        assert grads.keys() == ref_grads.keys()
        for k in ref_grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-8, atol=1e-10, msg=k)
