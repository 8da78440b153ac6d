"""``MODEL.MASK_FORMER.PRE_NORM True``: the pre-norm masked-attention decoder (official ``forward_pre``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidseg.models import build_model, load_config
from vidseg.models.mask2former.transformer_decoder import (
    CrossAttentionLayer,
    FFNLayer,
    MaskedTransformerDecoder,
    SelfAttentionLayer,
)

D, H = 8, 2


def _attention(mha: torch.nn.MultiheadAttention, q, k, v, blocked=None) -> torch.Tensor:
    """Multi-head attention written out: ``q [Lq, B, D]``, ``k, v [Lk, B, D]``, ``blocked [B*H, Lq, Lk]``."""
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    lq, b, _ = q.shape

    def heads(x: torch.Tensor) -> torch.Tensor:  # [L, B, D] -> [B*H, L, D/H], batch-major
        return x.reshape(x.shape[0], b * H, D // H).transpose(0, 1)

    qh, kh, vh = heads(q @ wq.T + bq), heads(k @ wk.T + bk), heads(v @ wv.T + bv)
    logits = qh @ kh.transpose(1, 2) / (D // H) ** 0.5
    if blocked is not None:
        logits = logits.masked_fill(blocked, float("-inf"))
    out = (logits.softmax(-1) @ vh).transpose(0, 1).reshape(lq, b, D)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def _ln(layer_norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + layer_norm.eps) * layer_norm.weight + layer_norm.bias


def _randomise_norm(layer: torch.nn.Module) -> None:
    # LayerNorm starts as the identity affine map; random values make the reference test the affine too.
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.5, 0.5)


def _inputs():
    g = torch.Generator().manual_seed(1)
    tgt, query_pos = torch.randn(5, 2, D, generator=g), torch.randn(5, 2, D, generator=g)
    memory, pos = torch.randn(7, 2, D, generator=g), torch.randn(7, 2, D, generator=g)
    blocked = torch.rand(2 * H, 5, 7, generator=g) < 0.4
    blocked[..., 0] = False  # no fully blocked row
    return tgt, query_pos, memory, pos, blocked


def test_pre_norm_self_attention_matches_the_hand_written_reference_and_differs_from_post_norm():
    torch.manual_seed(0)
    layer = SelfAttentionLayer(D, H, pre_norm=True).eval()
    _randomise_norm(layer)
    tgt, query_pos, *_ = _inputs()
    x = _ln(layer.norm, tgt)
    ref = tgt + _attention(layer.self_attn, x + query_pos, x + query_pos, x)
    torch.testing.assert_close(layer(tgt, query_pos), ref)
    layer.pre_norm = False
    post = _ln(layer.norm, tgt + _attention(layer.self_attn, tgt + query_pos, tgt + query_pos, tgt))
    torch.testing.assert_close(layer(tgt, query_pos), post)
    assert (post - ref).abs().max() > 0.1


def test_pre_norm_cross_attention_normalises_the_queries_only_and_keeps_the_mask():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(D, H, pre_norm=True).eval()
    _randomise_norm(layer)
    tgt, query_pos, memory, pos, blocked = _inputs()
    x = _ln(layer.norm, tgt)
    ref = tgt + _attention(layer.multihead_attn, x + query_pos, memory + pos, memory, blocked)
    torch.testing.assert_close(layer(tgt, memory, blocked, pos, query_pos), ref)
    # The mask is applied: without it the output changes.
    assert (layer(tgt, memory, None, pos, query_pos) - ref).abs().max() > 1e-3
    layer.pre_norm = False
    post = layer(tgt, memory, blocked, pos, query_pos)
    torch.testing.assert_close(
        post,
        _ln(
            layer.norm, tgt + _attention(layer.multihead_attn, tgt + query_pos, memory + pos, memory, blocked)
        ),
    )
    assert (post - ref).abs().max() > 0.1


def test_pre_norm_ffn_matches_the_reference():
    torch.manual_seed(0)
    layer = FFNLayer(D, 16, pre_norm=True).eval()
    _randomise_norm(layer)
    tgt = _inputs()[0]
    x = _ln(layer.norm, tgt)
    ref = tgt + F.linear(
        F.relu(F.linear(x, layer.linear1.weight, layer.linear1.bias)),
        layer.linear2.weight,
        layer.linear2.bias,
    )
    torch.testing.assert_close(layer(tgt), ref)
    layer.pre_norm = False
    assert (layer(tgt) - ref).abs().max() > 0.1


def _decoder(pre_norm: bool) -> MaskedTransformerDecoder:
    torch.manual_seed(0)
    return MaskedTransformerDecoder(
        in_channels=16,
        num_classes=3,
        hidden_dim=16,
        num_queries=4,
        nheads=2,
        dim_feedforward=32,
        dec_layers=4,
        mask_dim=16,
        pre_norm=pre_norm,
    ).eval()


def test_pre_norm_decoder_has_the_post_norm_state_dict_and_gives_other_outputs_from_the_same_weights():
    post, pre = _decoder(False), _decoder(True)
    sd = post.state_dict()
    assert list(pre.state_dict()) == list(sd)
    assert all(pre.state_dict()[k].shape == v.shape for k, v in sd.items())
    pre.load_state_dict(sd)  # strict: the same names load either way
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(1, 16, s, s, generator=g) for s in (2, 4, 8)]
    mask_features = torch.randn(1, 16, 16, 16, generator=g)
    out_post, out_pre = post(feats, mask_features), pre(feats, mask_features)
    # The prediction on the initial queries does not pass through any layer: it is the same.
    torch.testing.assert_close(
        out_pre["aux_outputs"][0]["pred_logits"], out_post["aux_outputs"][0]["pred_logits"]
    )
    assert (out_pre["pred_logits"] - out_post["pred_logits"]).abs().max() > 1e-3
    assert out_pre["frame_queries"].shape == out_post["frame_queries"].shape == (1, 1, 4, 16)


def test_config_pre_norm_builds_the_pre_norm_layers():
    cfg = load_config(
        "quickstart/mask2former_tiny.yaml",
        ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.MASK_FORMER.PRE_NORM", "True"],
    )
    model = build_model(cfg).model
    layers = [
        m for m in model.modules() if isinstance(m, (SelfAttentionLayer, CrossAttentionLayer, FFNLayer))
    ]
    assert layers and all(m.pre_norm for m in layers)
