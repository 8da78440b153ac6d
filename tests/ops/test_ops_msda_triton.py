"""Triton MSDA kernels against the pure-PyTorch reference, forward and backward.

Without CUDA the kernels run in the Triton interpreter (TRITON_INTERPRET=1, set here before the kernels are
imported) on tiny shapes; with CUDA the ``gpu`` tests run them at real sizes. Inputs are fresh random numbers
every run (own generator, seed printed in failure messages), not the session's fixed seed.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before triton is imported: triton reads it once, and the kernels are decorated for the
    # interpreter at import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from helpers_ops import level_layout  # noqa: E402

from vidseg.ops import multi_frame_ms_deform_attn, temporal_frame_table, temporal_ms_deform_attn  # noqa: E402

DEV = "cuda" if HAS_CUDA else "cpu"


def _gen() -> tuple[torch.Generator, int]:
    seed = int.from_bytes(os.urandom(4), "little")
    g = torch.Generator(device=DEV)
    g.manual_seed(seed)
    return g, seed


def _inputs(g, B, nF, Q, M, D, shapes, P, dtype=torch.float32, frames=True):
    ss, start, S = level_layout(shapes, device=DEV)
    L = len(shapes)
    kw = dict(generator=g, device=DEV)
    value = torch.randn(B, nF, S, M, D, **kw).to(dtype)
    loc = (torch.rand(B, Q, M, L, P, 2, **kw) * 1.6 - 0.3).to(dtype)
    attn = torch.rand(B, Q, M, L, P, **kw).to(dtype)
    fidx = torch.randint(0, nF, (Q, P), **kw) if frames else None
    return ss, start, value, loc, attn, fidx


def _fwd_bwd(impl, ss, start, value, loc, attn, fidx, grad, deterministic=False):
    xs = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = multi_frame_ms_deform_attn(
        xs[0], ss, start, xs[1], xs[2], fidx, impl=impl, deterministic=deterministic
    )
    grads = torch.autograd.grad(out, xs, grad)
    return out, grads


def _compare(seed, ref, got, rtol, atol, what=""):
    (o_ref, g_ref), (o, g) = ref, got
    torch.testing.assert_close(
        o.float(), o_ref.float(), rtol=rtol, atol=atol, msg=lambda m: f"seed={seed} out{what}: {m}"
    )
    for name, a, b in zip(("value", "loc", "attn"), g, g_ref):
        scale = b.float().abs().max().clamp_min(1.0)
        torch.testing.assert_close(
            a.float() / scale,
            b.float() / scale,
            rtol=rtol,
            atol=atol,
            msg=lambda m, n=name: f"seed={seed} grad {n}{what}: {m}",
        )


@pytest.mark.parametrize("frames", [False, True])
def test_triton_matches_torch_fp32_odd_sizes(frames):
    g, seed = _gen()
    # D=5 and Q=7 are not powers of two; locations reach outside the maps.
    ss, start, value, loc, attn, fidx = _inputs(
        g, 1, 3 if frames else 1, 7, 2, 5, [(4, 5), (2, 3)], 3, frames=frames
    )
    grad = torch.randn(1, 7, 10, generator=g, device=DEV)
    ref = _fwd_bwd("torch", ss, start, value.double(), loc.double(), attn.double(), fidx, grad.double())
    got = _fwd_bwd("triton", ss, start, value, loc, attn, fidx, grad)
    _compare(seed, ref, got, rtol=1e-4, atol=1e-5)


def test_triton_deterministic_backward_is_bitwise_repeatable():
    g, seed = _gen()
    ss, start, value, loc, attn, fidx = _inputs(g, 1, 2, 6, 1, 3, [(3, 4), (2, 2)], 3)
    # pile many samples onto few pixels so that the summation order matters
    loc = loc * 0.3 + 0.35
    grad = torch.randn(1, 6, 3, generator=g, device=DEV)
    a = _fwd_bwd("triton", ss, start, value, loc, attn, fidx, grad, deterministic=True)
    b = _fwd_bwd("triton", ss, start, value, loc, attn, fidx, grad, deterministic=True)
    for x, y in zip(a[1], b[1]):
        assert torch.equal(x, y), f"seed={seed}: deterministic backward differs between runs"
    ref = _fwd_bwd("torch", ss, start, value.double(), loc.double(), attn.double(), fidx, grad.double())
    _compare(seed, ref, a, rtol=1e-4, atol=1e-5, what=" (deterministic)")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_inputs_accumulate_in_fp32(dtype):
    g, seed = _gen()
    ss, start, value, loc, attn, fidx = _inputs(g, 1, 2, 5, 2, 4, [(4, 4), (2, 2)], 2)
    value, attn = value.to(dtype), attn.to(dtype)
    grad = torch.randn(1, 5, 8, generator=g, device=DEV)
    got = _fwd_bwd("triton", ss, start, value, loc, attn, fidx, grad.to(dtype))
    assert got[0].dtype == dtype and got[1][0].dtype == dtype
    # reference on the same (rounded) inputs in float64: only the output/gradient rounding differs
    ref = _fwd_bwd(
        "torch", ss, start, value.double(), loc.double(), attn.double(), fidx, grad.to(dtype).double()
    )
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    _compare(seed, ref, got, rtol=tol, atol=tol, what=f" ({dtype})")


def test_triton_temporal_op_matches_torch():
    g, seed = _gen()
    T, Q, M, D, Kc, Kt = 3, 4, 2, 3, 2, 1
    ss, start, S = level_layout([(3, 4), (2, 2)], device=DEV)
    L = 2
    frames = temporal_frame_table(T, device=DEV)
    kw = dict(generator=g, device=DEV)
    args = dict(
        value=torch.randn(T, S, M, D, **kw),
        cur_locations=torch.rand(T, Q, M, L, Kc, 2, **kw),
        cur_weights=torch.rand(T, Q, M, L, Kc, **kw),
        tmp_locations=torch.rand(T, Q, M, T - 1, L, Kt, 2, **kw),
        tmp_weights=torch.rand(T, Q, M, T - 1, L, Kt, **kw),
    )
    outs = {}
    for impl in ("torch", "triton"):
        xs = {k: v.clone().requires_grad_() for k, v in args.items()}
        out = temporal_ms_deform_attn(
            spatial_shapes=ss, level_start_index=start, frames=frames, impl=impl, **xs
        )
        out.square().sum().backward()
        outs[impl] = (out, [xs[k].grad for k in xs])
    torch.testing.assert_close(outs["triton"][0], outs["torch"][0], rtol=1e-4, atol=1e-5, msg=f"seed={seed}")
    for k, a, b in zip(args, outs["triton"][1], outs["torch"][1]):
        torch.testing.assert_close(
            a, b, rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"seed={seed} grad {k}: {m}"
        )


def test_triton_op_traces_under_torch_compile():
    g, seed = _gen()
    ss, start, value, loc, attn, fidx = _inputs(g, 1, 2, 3, 1, 2, [(2, 3)], 2)

    def fn(v, lo, a):
        return torch.ops.vidseg.msda_forward(v, ss, start, lo, a, fidx, False).sum()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    xs = [t.clone().requires_grad_() for t in (value, loc, attn)]
    out = compiled(*xs)
    out.backward()
    ref = multi_frame_ms_deform_attn(value, ss, start, loc, attn, fidx, impl="torch").sum()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=f"seed={seed}")
    assert all(x.grad is not None for x in xs)


def test_modules_give_the_same_result_with_both_impls():
    from vidseg.ops import MSDeformAttn, TemporalMSDeformAttnEncoder

    g, seed = _gen()
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    ss, start, S = level_layout([(3, 4), (2, 2)], device=DEV)
    m = MSDeformAttn(8, 2, 2, 2, impl="torch").to(DEV)
    q, x = torch.randn(1, 3, 8, generator=g, device=DEV), torch.randn(1, S, 8, generator=g, device=DEV)
    ref = torch.rand(1, 3, 2, 4, generator=g, device=DEV)
    out_t = m(q, ref, x, ss, start)
    m.impl = "triton"
    torch.testing.assert_close(m(q, ref, x, ss, start), out_t, rtol=1e-4, atol=1e-5, msg=f"seed={seed}")
    e = TemporalMSDeformAttnEncoder(8, 2, 2, 1, 1, num_frames=2, impl="torch").to(DEV)
    q2, x2 = torch.randn(2, S, 8, generator=g, device=DEV), torch.randn(2, S, 8, generator=g, device=DEV)
    r2 = torch.rand(2, S, 2, 2, generator=g, device=DEV)
    out_t = e(q2, r2, x2, ss, start)
    e.impl = "triton"
    torch.testing.assert_close(e(q2, r2, x2, ss, start), out_t, rtol=1e-4, atol=1e-5, msg=f"seed={seed}")


def test_explicit_triton_on_cpu_without_interpreter_fails_clearly(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ss, start, S = level_layout([(2, 2)])
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        multi_frame_ms_deform_attn(
            torch.zeros(1, 1, S, 1, 2),
            ss,
            start,
            torch.zeros(1, 1, 1, 1, 1, 2),
            torch.zeros(1, 1, 1, 1, 1),
            impl="triton",
        )


# ------------------------------------------------------------------------------------------ real sizes, GPU
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("deterministic", [False, True])
def test_gpu_devis_encoder_shape(deterministic):
    g, seed = _gen()
    # DeVIS YT-19 encoder: T=6 frames, 4 levels of a 360x640 input, 8 heads x 32, 4 + 5*4 points per level
    shapes = [(45, 80), (23, 40), (12, 20), (6, 10)]
    T = 6
    ss, start, value, loc, attn, fidx = _inputs(g, 1, T, T * 4820, 8, 32, shapes, 24)
    grad = torch.randn(1, T * 4820, 256, generator=g, device=DEV)
    ref = _fwd_bwd("torch", ss, start, value, loc, attn, fidx, grad)
    got = _fwd_bwd("triton", ss, start, value, loc, attn, fidx, grad, deterministic=deterministic)
    _compare(seed, ref, got, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_bf16_within_1e2_of_fp32():
    g, seed = _gen()
    shapes = [(100, 167), (50, 84), (25, 42), (13, 21)]  # Deformable-DETR 800x1333, strides 8..64
    ss, start, value, loc, attn, _ = _inputs(g, 1, 1, 4000, 8, 32, shapes, 4, frames=False)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    out32 = multi_frame_ms_deform_attn(value, ss, start, loc, attn, impl="triton")
    out16 = multi_frame_ms_deform_attn(value.bfloat16(), ss, start, loc, attn.bfloat16(), impl="triton")
    rel = (out16.float() - out32).norm() / out32.norm()
    assert rel < 1e-2, f"seed={seed}: bf16 relative error {rel:.3e}"


def test_triton_rejects_float64_and_auto_keeps_float64_on_torch():
    from vidseg.ops import resolve_impl

    with pytest.raises(TypeError, match="float64"):
        resolve_impl("triton", torch.device(DEV), torch.float64)
    assert resolve_impl("auto", torch.device(DEV), torch.float64) == "torch"
