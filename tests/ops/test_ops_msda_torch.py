"""Pure-PyTorch MSDA: agreement with the per-level formulation, gradcheck in float64, temporal parity with the
per-frame loop of the official code."""

from __future__ import annotations

import pytest
import torch
from helpers_ops import GRADCHECK_MODES, level_layout, random_locations

import vidseg.ops.msda_torch as msda_torch_mod
from vidseg.ops import (
    ms_deform_attn,
    multi_frame_ms_deform_attn,
    temporal_frame_table,
    temporal_ms_deform_attn,
)
from vidseg.ops.msda_per_level import ms_deform_attn_per_level, temporal_ms_deform_attn_per_frame

SHAPES = [(5, 7), (3, 4), (2, 2)]


def _spatial_inputs(B=2, Q=5, M=2, D=3, P=3, dtype=torch.float64, requires_grad=False):
    ss, start, S = level_layout(SHAPES)
    L = len(SHAPES)
    value = torch.randn(B, S, M, D, dtype=dtype)
    loc = random_locations(B, Q, M, L, P, 2, dtype=dtype)
    attn = torch.rand(B, Q, M, L, P, dtype=dtype)
    for t in (value, loc, attn):
        t.requires_grad_(requires_grad)
    return value, ss, start, loc, attn


def test_spatial_matches_per_level_formulation():
    value, ss, start, loc, attn = _spatial_inputs()
    out = ms_deform_attn(value, ss, start, loc, attn, impl="torch")
    ref = ms_deform_attn_per_level(value, ss, loc, attn)
    assert out.shape == (2, 5, 2 * 3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_spatial_bilinear_at_pixel_centres_reads_the_pixel():
    # A location at the centre of pixel (r, c) of level l returns exactly that value (align_corners=False).
    ss, start, S = level_layout(SHAPES)
    value = torch.randn(1, S, 1, 2, dtype=torch.float64)
    H, W = SHAPES[1]
    r, c = 2, 1
    loc = torch.zeros(1, 1, 1, 3, 1, 2, dtype=torch.float64)
    loc[..., 1, 0, 0] = (c + 0.5) / W
    loc[..., 1, 0, 1] = (r + 0.5) / H
    attn = torch.zeros(1, 1, 1, 3, 1, dtype=torch.float64)
    attn[..., 1, 0] = 1.0
    out = ms_deform_attn(value, ss, start, loc, attn, impl="torch")
    torch.testing.assert_close(out[0, 0], value[0, int(start[1]) + r * W + c, 0])


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_spatial_gradcheck_float64(fast_mode):
    inputs = _spatial_inputs(B=1, Q=3, M=2, D=2, P=2, requires_grad=True)
    value, ss, start, loc, attn = inputs
    assert torch.autograd.gradcheck(
        lambda v, lo, a: ms_deform_attn(v, ss, start, lo, a, impl="torch"),
        (value, loc, attn),
        atol=1e-7,
        fast_mode=fast_mode,
    )


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_multi_frame_gradcheck_float64(fast_mode):
    ss, start, S = level_layout(SHAPES)
    B, nF, Q, M, D, L, P = 1, 3, 4, 2, 2, len(SHAPES), 3
    value = torch.randn(B, nF, S, M, D, dtype=torch.float64, requires_grad=True)
    loc = random_locations(B, Q, M, L, P, 2).requires_grad_()
    attn = torch.rand(B, Q, M, L, P, dtype=torch.float64, requires_grad=True)
    fidx = torch.randint(0, nF, (Q, P))
    assert torch.autograd.gradcheck(
        lambda v, lo, a: multi_frame_ms_deform_attn(v, ss, start, lo, a, fidx, impl="torch"),
        (value, loc, attn),
        atol=1e-7,
        fast_mode=fast_mode,
    )


def test_multi_frame_equals_spatial_op_per_frame():
    # Each sample reading frame f must equal the spatial op on frame f alone: no leak across frame borders,
    # including samples just outside the top / bottom edges.
    ss, start, S = level_layout(SHAPES)
    nF, Q, M, D, L, P = 4, 6, 2, 3, len(SHAPES), 2
    value = torch.randn(1, nF, S, M, D, dtype=torch.float64)
    loc = random_locations(1, Q, M, L, P, 2)
    loc[0, 0, :, :, :, 1] = -0.5 / torch.tensor(SHAPES)[:, 0, None].double() + 1e-3  # just inside the top
    loc[0, 1, :, :, :, 1] = 1.0 + 0.49 / torch.tensor(SHAPES)[:, 0, None].double()  # just inside the bottom
    loc[0, 2, :, :, :, 1] = 1.0 + 0.51 / torch.tensor(SHAPES)[:, 0, None].double()  # entirely outside
    attn = torch.rand(1, Q, M, L, P, dtype=torch.float64)
    fidx = torch.randint(0, nF, (Q, P))
    out = multi_frame_ms_deform_attn(value, ss, start, loc, attn, fidx, impl="torch")
    expected = torch.zeros_like(out)
    for f in range(nF):
        a = attn * (fidx == f)[None, :, None, None, :]
        expected += ms_deform_attn_per_level(value[:, f], ss, loc, a)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_query_chunking_matches_unchunked_forward_and_backward(monkeypatch):
    # the grid_sample formulation's chunking (the sparse CPU path's is in test_ops_msda_sparse.py)
    monkeypatch.setattr(msda_torch_mod, "SPARSE_CPU", "never")
    ss, start, S = level_layout(SHAPES)
    B, nF, Q, M, D, L, P = 1, 2, 11, 2, 3, len(SHAPES), 2
    xs = [
        torch.randn(B, nF, S, M, D, dtype=torch.float64, requires_grad=True),
        random_locations(B, Q, M, L, P, 2).requires_grad_(),
        torch.rand(B, Q, M, L, P, dtype=torch.float64, requires_grad=True),
    ]
    fidx = torch.randint(0, nF, (Q, P))
    g = torch.randn(B, Q, M * D, dtype=torch.float64)

    def run():
        out = multi_frame_ms_deform_attn(xs[0], ss, start, xs[1], xs[2], fidx, impl="torch")
        return out, torch.autograd.grad(out, xs, g)

    full = run()
    monkeypatch.setattr(msda_torch_mod, "_CHUNK_ELEMS", 2 * M * D * P)  # chunks of 2 queries
    chunked = run()
    torch.testing.assert_close(chunked[0], full[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(chunked[1], full[1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _temporal_inputs(T, Q, M, D, L, Kc, Kt, W, requires_grad=False):
    ss, start, S = level_layout(SHAPES[:L])
    t = dict(
        value=torch.randn(T, S, M, D, dtype=torch.float64),
        cur_locations=random_locations(T, Q, M, L, Kc, 2),
        cur_weights=torch.rand(T, Q, M, L, Kc, dtype=torch.float64),
        tmp_locations=random_locations(T, Q, M, W, L, Kt, 2),
        tmp_weights=torch.rand(T, Q, M, W, L, Kt, dtype=torch.float64),
    )
    for x in t.values():
        x.requires_grad_(requires_grad)
    return ss, start, t


@pytest.mark.parametrize("window", [None, 2, 4])
def test_temporal_matches_per_frame_loop_forward_and_backward(window):
    T, Q, M, D, L, Kc, Kt = 5, 4, 2, 3, 3, 3, 2
    frames = temporal_frame_table(T, window)
    ss, start, t = _temporal_inputs(T, Q, M, D, L, Kc, Kt, frames.shape[1], requires_grad=True)
    out = temporal_ms_deform_attn(
        spatial_shapes=ss, level_start_index=start, frames=frames, impl="torch", **t
    )
    ref = temporal_ms_deform_attn_per_frame(spatial_shapes=ss, frames=frames, **t)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(t.values()), g)
    grads_ref = torch.autograd.grad(ref, list(t.values()), g)
    for name, a, b in zip(t, grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_temporal_gradcheck_float64(fast_mode):
    T, Q, M, D, L, Kc, Kt = 3, 2, 2, 2, 2, 2, 1
    frames = temporal_frame_table(T)
    ss, start, t = _temporal_inputs(T, Q, M, D, L, Kc, Kt, T - 1, requires_grad=True)
    names = list(t)

    def fn(*xs):
        return temporal_ms_deform_attn(
            spatial_shapes=ss, level_start_index=start, frames=frames, impl="torch", **dict(zip(names, xs))
        )

    assert torch.autograd.gradcheck(fn, tuple(t.values()), atol=1e-7, fast_mode=fast_mode)


def test_frame_table_connect_all_and_reflected_window():
    assert temporal_frame_table(3).tolist() == [[1, 2], [0, 2], [0, 1]]
    # offsets {-2,-1,1,2}; out-of-clip offsets reflected (official DeVISTransformerEncoder)
    assert temporal_frame_table(6, 4).tolist()[0] == [2, 1, 1, 2]
    assert temporal_frame_table(6, 4).tolist()[3] == [1, 2, 4, 5]
    with pytest.raises(ValueError, match="does not fit"):
        temporal_frame_table(2, 4)


def test_bad_inputs_give_clear_errors():
    value, ss, start, loc, attn = _spatial_inputs()
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, ss, start, loc, attn[..., :1], impl="torch")
    with pytest.raises(ValueError, match="spatial_shapes sum"):
        ms_deform_attn(value[:, :-1], ss, start, loc, attn, impl="torch")
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn(value, ss, start, loc[..., :1, :, :], attn, impl="torch")
    with pytest.raises(ValueError, match="impl"):
        ms_deform_attn(value, ss, start, loc, attn, impl="cuda")
