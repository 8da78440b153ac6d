"""The CPU sparse-matrix MSDA path (vidseg/ops/msda_sparse.py) against the grid_sample formulation and the
per-level reference: forward, every gradient, chunking, padding edge cases, dispatch and determinism."""

from __future__ import annotations

import pytest
import torch
from helpers_ops import GRADCHECK_MODES, level_layout, random_locations

import vidseg.ops.msda_sparse as sparse_mod
import vidseg.ops.msda_torch as msda_torch_mod
from vidseg.ops import multi_frame_ms_deform_attn
from vidseg.ops.msda_per_level import ms_deform_attn_per_level
from vidseg.ops.msda_sparse import TapLayout, msda_sparse, sparse_path_supported

SHAPES = [(5, 7), (3, 4), (2, 2)]


def _inputs(B=2, nF=3, Q=7, M=2, D=3, P=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ss, start, S = level_layout(SHAPES)
    L = len(SHAPES)
    value = torch.randn(B, nF, S, M, D, dtype=dtype, generator=g)
    loc = random_locations(B, Q, M, L, P, 2, dtype=dtype, generator=g)
    attn = torch.rand(B, Q, M, L, P, dtype=dtype, generator=g)
    fidx = torch.randint(0, nF, (Q, P), generator=g)
    return value, ss, start, loc, attn, fidx


def _run(path, monkeypatch, value, ss, start, loc, attn, fidx, grad_out=None):
    monkeypatch.setattr(msda_torch_mod, "SPARSE_CPU", path)
    xs = [t.detach().requires_grad_() for t in (value, loc, attn)]
    out = multi_frame_ms_deform_attn(xs[0], ss, start, xs[1], xs[2], fidx, impl="torch")
    g = torch.randn_like(out) if grad_out is None else grad_out
    return out, torch.autograd.grad(out, xs, g), g


@pytest.mark.parametrize("chunk_taps", [1 << 22, 4 * 3 * 3 * 2 * 2 * 2])  # one chunk; chunks of 2 queries
def test_sparse_path_matches_grid_sample_path_forward_and_gradients(monkeypatch, chunk_taps):
    monkeypatch.setattr(sparse_mod, "_CHUNK_TAPS", chunk_taps)
    args = _inputs()
    out_s, grads_s, g = _run("always", monkeypatch, *args)
    out_g, grads_g, _ = _run("never", monkeypatch, *args, grad_out=g)
    torch.testing.assert_close(out_s, out_g, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(("value", "locations", "weights"), grads_s, grads_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


def test_sparse_path_spatial_matches_per_level_reference():
    value, ss, start, loc, attn, _ = _inputs(nF=1)
    shapes = [tuple(s) for s in ss.tolist()]
    out = msda_sparse(value, shapes, start.tolist(), loc, attn, None)
    torch.testing.assert_close(
        out, ms_deform_attn_per_level(value[:, 0], ss, loc, attn), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_sparse_path_gradcheck_with_samples_across_borders(fast_mode):
    value, ss, start, loc, attn, fidx = _inputs(B=1, Q=4, M=2, D=2, P=3)
    # taps straddling every border of the frame, and one sample entirely outside (clamped: value 0, grad 0)
    loc[0, 0, :, :, 0] = torch.tensor([-0.02, 0.47])  # (not at a pixel centre: a kink of bilinear)
    loc[0, 1, :, :, 0] = torch.tensor([1.03, 1.01])
    loc[0, 2, :, :, 0] = torch.tensor([0.53, -0.07])
    loc[0, 3, :, :, 0] = torch.tensor([-0.9, 1.8])
    shapes = [tuple(s) for s in ss.tolist()]
    xs = tuple(t.requires_grad_() for t in (value, loc, attn))
    assert torch.autograd.gradcheck(
        lambda v, lo, a: msda_sparse(v, shapes, start.tolist(), lo, a, fidx),
        xs,
        atol=1e-7,
        fast_mode=fast_mode,
    )


def test_samples_outside_their_frame_read_zero_with_zero_gradient():
    value, ss, start, loc, attn, fidx = _inputs(B=1, Q=4)
    loc[0, 0] = -3.0  # far outside: clamped into the padding of the own frame
    loc[0, 1] = 5.0
    loc[0, 2, ..., 0] = -0.6  # left of the frame: the taps wrap onto the previous row's zero columns
    loc[0, 3, ..., 1] = 1.5  # below the frame: the zero rows between this frame and the next
    shapes = [tuple(s) for s in ss.tolist()]
    xs = [t.requires_grad_() for t in (value, loc, attn)]
    out = msda_sparse(xs[0], shapes, start.tolist(), xs[1], xs[2], fidx)
    assert torch.equal(out, torch.zeros_like(out))
    g_value, g_loc, g_attn = torch.autograd.grad(out, xs, torch.ones_like(out))
    assert torch.equal(g_value, torch.zeros_like(g_value))
    assert torch.equal(g_loc, torch.zeros_like(g_loc))
    assert torch.equal(g_attn, torch.zeros_like(g_attn))


def test_tap_indices_stay_in_the_canvas_and_padding_is_zero():
    value, ss, start, loc, attn, fidx = _inputs(B=2, nF=3, Q=50)
    loc = torch.rand_like(loc) * 20 - 10  # anywhere
    shapes = [tuple(s) for s in ss.tolist()]
    lay = TapLayout(shapes, 3, 2 * value.shape[3])
    canvas = lay.canvas(value, start.tolist())
    assert canvas.shape == (lay.total, value.shape[-1])
    assert canvas.abs().sum() == pytest.approx(value.abs().sum().item())  # value copied once, rest zeros
    col, frac = lay.taps(loc, fidx)
    assert col.dtype == torch.int32 and int(col.min()) >= 0 and int(col.max()) < lay.total
    assert float(frac.min()) >= 0 and float(frac.max()) < 1
    torch.testing.assert_close(lay.value_grad(canvas, start.tolist(), value.shape), value, rtol=0, atol=0)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_only_the_requested_gradients(needs):
    value, ss, start, loc, attn, fidx = _inputs()
    shapes = [tuple(s) for s in ss.tolist()]
    full = [t.detach().requires_grad_() for t in (value, loc, attn)]
    g = torch.randn(2, loc.shape[1], value.shape[3] * value.shape[4], dtype=torch.float64)
    ref = torch.autograd.grad(msda_sparse(full[0], shapes, start.tolist(), full[1], full[2], fidx), full, g)
    part = [t.detach().requires_grad_(n) for t, n in zip((value, loc, attn), needs)]
    out = msda_sparse(part[0], shapes, start.tolist(), part[1], part[2], fidx)
    got = torch.autograd.grad(out, [t for t in part if t.requires_grad], g)
    want = [r for r, n in zip(ref, needs) if n]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_backward_is_deterministic():
    value, ss, start, loc, attn, fidx = _inputs(Q=40)
    shapes = [tuple(s) for s in ss.tolist()]
    runs = []
    for _ in range(2):
        xs = [t.detach().float().requires_grad_() for t in (value, loc, attn)]
        out = msda_sparse(xs[0], shapes, start.tolist(), xs[1], xs[2], fidx)
        runs.append(torch.autograd.grad(out, xs, torch.ones_like(out)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_dispatch_uses_the_sparse_path_only_where_it_can_run(monkeypatch):
    value, ss, start, loc, attn, fidx = _inputs()
    shapes = [tuple(s) for s in ss.tolist()]
    assert sparse_path_supported(value, shapes, 3)
    assert sparse_path_supported(value.float(), shapes, 3)
    assert not sparse_path_supported(value.bfloat16(), shapes, 3)  # MKL sparse kernels take fp32/fp64 only
    assert not sparse_path_supported(value.half(), shapes, 3)
    calls = []
    monkeypatch.setattr(msda_torch_mod, "msda_sparse", lambda *a: calls.append(1) or msda_sparse(*a))
    multi_frame_ms_deform_attn(value, ss, start, loc, attn, fidx, impl="torch")
    assert calls == [1]
    bf = [t.bfloat16() for t in (value, loc, attn)]
    out_bf16 = multi_frame_ms_deform_attn(bf[0], ss, start, bf[1], bf[2], fidx, impl="torch")
    assert calls == [1] and out_bf16.dtype == torch.bfloat16


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_grid_sample_path_still_passes_gradcheck(monkeypatch, fast_mode):
    # the formulation used on GPU (impl="torch") and for bf16 / fp16 must stay correct too
    monkeypatch.setattr(msda_torch_mod, "SPARSE_CPU", "never")
    value, ss, start, loc, attn, fidx = _inputs(B=1, Q=4, M=2, D=2, P=2)
    xs = tuple(t.requires_grad_() for t in (value, loc, attn))
    assert torch.autograd.gradcheck(
        lambda v, lo, a: multi_frame_ms_deform_attn(v, ss, start, lo, a, fidx, impl="torch"),
        xs,
        atol=1e-7,
        fast_mode=fast_mode,
    )


def test_nan_location_gives_nan_like_grid_sample_and_never_reads_outside_the_canvas():
    # A NaN location must not become a garbage tap index (an out-of-bounds read in the sparse kernel); its
    # output is NaN, as with grid_sample, and the other queries are untouched.
    value, ss, start, loc, attn, fidx = _inputs(B=1, Q=3)
    loc[0, 1, 0, 0, 0, 0] = float("nan")
    shapes = [tuple(s) for s in ss.tolist()]
    out = msda_sparse(value, shapes, start.tolist(), loc, attn, fidx)
    D = value.shape[-1]
    assert torch.isnan(out[0, 1, :D]).all()
    assert torch.isfinite(out[0, [0, 2]]).all()
    lay = TapLayout(shapes, 3, value.shape[3])
    col, _ = lay.taps(loc, fidx)
    assert int(col.min()) >= 0 and int(col.max()) < lay.total


def test_frame_index_outside_the_clip_is_rejected():
    value, ss, start, loc, attn, fidx = _inputs(nF=3)
    fidx[0, 0] = 3
    with pytest.raises(ValueError, match=r"frame_index must lie in \[0, 2\]"):
        multi_frame_ms_deform_attn(value, ss, start, loc, attn, fidx, impl="torch")
