"""MSDA modules: parameter layout (official state-dict shapes), initialisation, and forward semantics against
a per-frame loop written from devis.md §2.4."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers_ops import GRADCHECK_MODES, level_layout

from vidseg.ops import (
    MSDeformAttn,
    TemporalMSDeformAttnDecoder,
    TemporalMSDeformAttnEncoder,
    expand_spatial_to_temporal,
    init_temporal_from_spatial,
)
from vidseg.ops.msda_per_level import ms_deform_attn_per_level

SHAPES = [(6, 5), (3, 3), (2, 2)]


def _randomise(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)


def test_temporal_parameter_shapes_match_official_state_dict():
    # devis-state-dict-keys-R50-YT19: T=6, L=4, K=4 -> 256 / 128 / 1280 / 640 rows.
    for mod in (TemporalMSDeformAttnEncoder(), TemporalMSDeformAttnDecoder()):
        shapes = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
        assert shapes == {
            "sampling_offsets.weight": (256, 256),
            "sampling_offsets.bias": (256,),
            "attention_weights.weight": (128, 256),
            "attention_weights.bias": (128,),
            "temporal_sampling_offsets.weight": (1280, 256),
            "temporal_sampling_offsets.bias": (1280,),
            "temporal_attention_weights.weight": (640, 256),
            "temporal_attention_weights.bias": (640,),
            "value_proj.weight": (256, 256),
            "value_proj.bias": (256,),
            "output_proj.weight": (256, 256),
            "output_proj.bias": (256,),
        }
    enc_w = TemporalMSDeformAttnEncoder(connect_all_frames=False, temporal_window=2)
    assert enc_w.temporal_attention_weights.out_features == 8 * 2 * 4 * 4


def test_deformable_detr_init_rays():
    m = MSDeformAttn(d_model=64, n_levels=2, n_heads=8, n_points=3)
    bias = m.sampling_offsets.bias.view(8, 2, 3, 2)
    assert torch.all(m.sampling_offsets.weight == 0) and torch.all(m.attention_weights.weight == 0)
    for h in range(8):
        theta = 2 * math.pi * h / 8
        d = torch.tensor([math.cos(theta), math.sin(theta)])
        d = d / d.abs().max()
        for k in range(3):
            torch.testing.assert_close(bias[h, 1, k], d * (k + 1))
    t = TemporalMSDeformAttnDecoder(
        d_model=64, n_levels=2, n_heads=8, n_points=3, n_temporal_points=2, num_frames=3
    )
    tb = t.temporal_sampling_offsets.bias.view(8, 2, 2, 2, 2)  # (M, W, L, Kt, 2)
    torch.testing.assert_close(tb[:, 1, 0], bias[:, 0, :2])


def _manual_msdeformattn(m, query, ref, x, ss):
    B, Q, C = query.shape
    M, L, K = m.n_heads, m.n_levels, m.n_points
    value = m.value_proj(x).view(B, -1, M, C // M)
    off = m.sampling_offsets(query).view(B, Q, M, L, K, 2)
    a = F.softmax(m.attention_weights(query).view(B, Q, M, L * K), -1).view(B, Q, M, L, K)
    if ref.shape[-1] == 2:
        norm = torch.stack([ss[:, 1], ss[:, 0]], -1).double()
        loc = ref[:, :, None, :, None] + off / norm[:, None]
    else:
        loc = ref[:, :, None, :, None, :2] + off / K * ref[:, :, None, :, None, 2:] * 0.5
    return m.output_proj(ms_deform_attn_per_level(value, ss, loc, a))


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_msdeformattn_forward_matches_formula(ref_dim):
    ss, start, S = level_layout(SHAPES)
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=2, impl="torch").double()
    _randomise(m)
    q, x = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, S, 16, dtype=torch.float64)
    ref = torch.rand(2, 5, 3, ref_dim, dtype=torch.float64)
    torch.testing.assert_close(m(q, ref, x, ss, start), _manual_msdeformattn(m, q, ref, x, ss))
    # padding: masked tokens contribute nothing
    mask = torch.zeros(2, S, dtype=torch.bool)
    mask[:, :7] = True
    x2 = x.clone()
    x2[:, :7] = 1e3
    torch.testing.assert_close(m(q, ref, x, ss, start, mask), m(q, ref, x2, ss, start, mask))


def _manual_temporal(m, query, ref, x, ss, frames, encoder: bool):
    """Per-frame loop straight from devis.md §2.4 (one softmax per head over current + temporal logits)."""
    T, Q, C = query.shape
    M, L, Kc, Kt = m.n_heads, m.n_levels, m.n_points, m.n_temporal_points
    W = frames.shape[1]
    value = m.value_proj(x).view(T, -1, M, C // M)
    norm = torch.stack([ss[:, 1], ss[:, 0]], -1).double()
    outs = []
    for t in range(T):
        q = query[t : t + 1]
        logits = torch.cat(
            (m.attention_weights(q).view(1, Q, M, -1), m.temporal_attention_weights(q).view(1, Q, M, -1)), -1
        )
        a = F.softmax(logits, -1)
        a_cur, a_tmp = a[..., : L * Kc].view(1, Q, M, L, Kc), a[..., L * Kc :].view(1, Q, M, W, L, Kt)
        off = m.sampling_offsets(q).view(1, Q, M, L, Kc, 2)
        toff = m.temporal_sampling_offsets(q).view(1, Q, M, W, L, Kt, 2)
        r = ref[t][None]
        if r.shape[-1] == 2:
            cur = r[:, :, None, :, None] + off / norm[:, None]
        else:
            cur = r[:, :, None, :, None, :2] + off / Kc * r[:, :, None, :, None, 2:] * 0.5
        out = ms_deform_attn_per_level(value[t : t + 1], ss, cur, a_cur)
        for j in range(W):
            u = int(frames[t, j])
            if encoder:
                tr = ref[t][:, :1].expand(Q, L, 2)[None]
            elif m.instance_aware:
                tr = ref[u][None]
            else:
                tr = r
            if tr.shape[-1] == 2:
                loc = tr[:, :, None, :, None] + toff[:, :, :, j] / norm[:, None]
            else:
                loc = tr[:, :, None, :, None, :2] + toff[:, :, :, j] / Kt * tr[:, :, None, :, None, 2:] * 0.5
            out = out + ms_deform_attn_per_level(value[u : u + 1], ss, loc, a_tmp[:, :, :, j])
        outs.append(out)
    return m.output_proj(torch.cat(outs, 0))


@pytest.mark.parametrize("window", [None, 2])
def test_temporal_encoder_matches_per_frame_formula(window):
    ss, start, S = level_layout(SHAPES)
    T = 4
    kw = dict(connect_all_frames=window is None, temporal_window=window or 4)
    m = TemporalMSDeformAttnEncoder(16, 3, 2, 2, 3, num_frames=T, impl="torch", **kw).double()
    _randomise(m)
    q, x = torch.randn(T, S, 16, dtype=torch.float64), torch.randn(T, S, 16, dtype=torch.float64)
    ref = torch.rand(T, S, 3, 2, dtype=torch.float64)
    from vidseg.ops import temporal_frame_table

    expected = _manual_temporal(m, q, ref, x, ss, temporal_frame_table(T, window), encoder=True)
    torch.testing.assert_close(m(q, ref, x, ss, start), expected)


@pytest.mark.parametrize("instance_aware", [True, False])
@pytest.mark.parametrize("ref_dim", [2, 4])
def test_temporal_decoder_matches_per_frame_formula(instance_aware, ref_dim):
    ss, start, S = level_layout(SHAPES)
    T, Nq = 3, 4
    m = TemporalMSDeformAttnDecoder(16, 3, 2, 3, 2, num_frames=T, instance_aware=instance_aware, impl="torch")
    m = m.double()
    _randomise(m)
    q, x = torch.randn(T, Nq, 16, dtype=torch.float64), torch.randn(T, S, 16, dtype=torch.float64)
    ref = torch.rand(T, Nq, 3, ref_dim, dtype=torch.float64)
    from vidseg.ops import temporal_frame_table

    expected = _manual_temporal(m, q, ref, x, ss, temporal_frame_table(T), encoder=False)
    torch.testing.assert_close(m(q, ref, x, ss, start), expected)


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_temporal_decoder_gradcheck(fast_mode):
    ss, start, S = level_layout(SHAPES[:2])
    T, Nq = 3, 2
    m = TemporalMSDeformAttnDecoder(8, 2, 2, 2, 1, num_frames=T, impl="torch").double()
    _randomise(m)
    q = torch.randn(T, Nq, 8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(T, S, 8, dtype=torch.float64, requires_grad=True)
    ref = torch.rand(T, Nq, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: m(a, b, c, ss, start), (q, ref, x), atol=1e-7, fast_mode=fast_mode
    )


def test_clip_length_must_match_num_frames():
    ss, start, S = level_layout(SHAPES)
    m = TemporalMSDeformAttnEncoder(16, 3, 2, 2, 2, num_frames=4, impl="torch")
    with pytest.raises(ValueError, match="num_frames=4"):
        m(torch.randn(3, S, 16), torch.rand(3, S, 3, 2), torch.randn(3, S, 16), ss, start)


def test_init_temporal_from_spatial_gives_identical_logits_per_frame():
    T = 4
    m = TemporalMSDeformAttnDecoder(16, 3, 2, n_points=3, n_temporal_points=2, num_frames=T).double()
    _randomise(m)
    init_temporal_from_spatial(m)
    q = torch.randn(5, 16, dtype=torch.float64)
    spatial = m.attention_weights(q).view(5, 2, 3, 3)  # (M, L, Kc)
    temporal = m.temporal_attention_weights(q).view(5, 2, T - 1, 3, 2)  # (M, W, L, Kt)
    for j in range(T - 1):
        torch.testing.assert_close(temporal[:, :, j], spatial[..., :2])
    so = m.sampling_offsets(q).view(5, 2, 3, 3, 2)
    to = m.temporal_sampling_offsets(q).view(5, 2, T - 1, 3, 2, 2)
    torch.testing.assert_close(to[:, :, 2], so[..., :2, :])
    # level slicing for single-level ablations
    w = expand_spatial_to_temporal(m.sampling_offsets.weight, 2, 3, 3, 5, 2, n_temporal_levels=1)
    assert w.shape == (2 * 5 * 1 * 2 * 2, 16)
    with pytest.raises(ValueError, match="rows"):
        expand_spatial_to_temporal(torch.zeros(7, 16), 2, 3, 3, 5, 2)


def test_impl_key_is_validated():
    with pytest.raises(ValueError, match="MODEL.DEFORM_ATTN_IMPL"):
        MSDeformAttn(impl="fast")


def test_low_precision_and_autocast_on_the_torch_path():
    ss, start, S = level_layout(SHAPES)
    T, Nq = 3, 4
    m = TemporalMSDeformAttnDecoder(16, 3, 2, 2, 2, num_frames=T, impl="torch")
    _randomise(m, 0.2)
    q, x = torch.randn(T, Nq, 16), torch.randn(T, S, 16)
    ref = torch.rand(T, Nq, 3, 4)
    expected = m(q, ref, x, ss, start)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(q, ref, x, ss, start)
    out.float().sum().backward()
    assert m.value_proj.weight.grad is not None
    rel = (out.float() - expected).norm() / expected.norm()
    assert rel < 3e-2, rel
    mb = m.to(torch.bfloat16)
    out_b = mb(q.bfloat16(), ref.bfloat16(), x.bfloat16(), ss, start)
    assert out_b.dtype == torch.bfloat16
    assert (out_b.float() - expected).norm() / expected.norm() < 5e-2


@pytest.mark.slow  # compiling takes ~20 s on two cores; the Triton op is traced in test_ops_msda_triton
def test_torch_path_runs_under_torch_compile():
    # The pure-PyTorch path graph-breaks on spatial_shapes.tolist(); it must still compile and match eager.
    ss, start, S = level_layout(SHAPES[:2])
    m = TemporalMSDeformAttnDecoder(16, 2, 2, 2, 2, num_frames=3, impl="torch")
    compiled = torch.compile(m, backend="aot_eager")
    q, ref, x = torch.randn(3, 4, 16), torch.rand(3, 4, 2, 4), torch.randn(3, S, 16)
    out = compiled(q, ref, x, ss, start)
    out.sum().backward()
    torch.testing.assert_close(out, m(q, ref, x, ss, start))
    assert m.sampling_offsets.weight.grad is not None
