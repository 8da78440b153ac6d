"""Modulated deformable conv against an explicit bilinear-gathering loop (torchvision semantics), for every
formulation of ``deform_conv2d`` (project / gather, embedding_bag / grid_sample, chunked or not)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers_ops import GRADCHECK_MODES

from vidseg.ops import ModulatedDeformConv2d, deform_conv2d
from vidseg.ops.deform_conv import choose_method

METHODS = ["project", "project_grid", "gather", "gather_grid", "legacy", "auto"]


def _bilinear(img, y, x):
    """img [C, H, W]; torchvision's rule: zero when y <= -1, y >= H, x <= -1, x >= W; missing taps are
    zero."""
    C, H, W = img.shape
    if y <= -1 or y >= H or x <= -1 or x >= W:
        return img.new_zeros(C)
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    out = img.new_zeros(C)
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < H and 0 <= xx < W:
                out = out + wy * wx * img[:, yy, xx]
    return out


def _loop_deform_conv(inp, offset, weight, bias, stride, padding, dilation, mask):
    B, Cin, H, W = inp.shape
    Cout, Cin_g, kh, kw = weight.shape
    Gw = Cin // Cin_g
    K = kh * kw
    Ho, Wo = offset.shape[2:]
    G = offset.shape[1] // (2 * K)
    cpg = Cin // G
    out = inp.new_zeros(B, Cout, Ho, Wo)
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                col = inp.new_zeros(Cin, K)
                for g in range(G):
                    for k in range(K):
                        ki, kj = divmod(k, kw)
                        dy = offset[b, g * 2 * K + 2 * k, i, j]
                        dx = offset[b, g * 2 * K + 2 * k + 1, i, j]
                        y = i * stride[0] - padding[0] + ki * dilation[0] + float(dy)
                        x = j * stride[1] - padding[1] + kj * dilation[1] + float(dx)
                        v = _bilinear(inp[b, g * cpg : (g + 1) * cpg], y, x)
                        if mask is not None:
                            v = v * mask[b, g * K + k, i, j]
                        col[g * cpg : (g + 1) * cpg, k] = v
                for o in range(Cout):
                    wg = o // (Cout // Gw)
                    w = weight[o].reshape(Cin_g, K)
                    out[b, o, i, j] = (w * col[wg * Cin_g : (wg + 1) * Cin_g]).sum()
                    if bias is not None:
                        out[b, o, i, j] += bias[o]
    return out


CASES = [
    # (Cin, Cout, k, stride, padding, dilation, offset groups, weight groups, mask, bias)
    (3, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True),
    (4, 4, (3, 2), (2, 1), (0, 1), (1, 2), 2, 2, True, False),
    (2, 3, (2, 2), (1, 2), (1, 0), (2, 1), 1, 1, False, True),
]


@pytest.mark.parametrize("case", CASES)
def test_deform_conv_matches_explicit_loops(case):
    Cin, Cout, (kh, kw), s, p, d, G, Gw, use_mask, use_bias = case
    B, H, W = 3, 5, 6
    Ho = (H + 2 * p[0] - (d[0] * (kh - 1) + 1)) // s[0] + 1
    Wo = (W + 2 * p[1] - (d[1] * (kw - 1) + 1)) // s[1] + 1
    inp = torch.randn(B, Cin, H, W, dtype=torch.float64)
    offset = torch.randn(B, 2 * G * kh * kw, Ho, Wo, dtype=torch.float64) * 1.5
    weight = torch.randn(Cout, Cin // Gw, kh, kw, dtype=torch.float64)
    bias = torch.randn(Cout, dtype=torch.float64) if use_bias else None
    mask = torch.rand(B, G * kh * kw, Ho, Wo, dtype=torch.float64) if use_mask else None
    ref = _loop_deform_conv(inp, offset, weight, bias, s, p, d, mask)
    # Every formulation; one image per chunk, then all at once: chunking must not change anything.
    for method, chunk in itertools.product(METHODS, (1, 2**30)):
        out = deform_conv2d(
            inp, offset, weight, bias, s, p, d, mask, method=method, max_chunk_bytes=chunk
        )  # fmt: skip
        assert out.is_contiguous()
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_deform_conv_samples_at_and_beyond_the_border():
    """Samples exactly at -1, 0, H-1, H, between and far outside: zero padding as in torchvision."""
    B, C, H, W = 1, 2, 4, 5
    inp = torch.randn(B, C, H, W, dtype=torch.float64)
    weight = torch.randn(3, C, 3, 3, dtype=torch.float64)
    vals = torch.tensor([-7.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.25, 2.75, 3.0, 3.5, 4.0, 4.2, 9.0])
    g = torch.Generator().manual_seed(0)
    # Offsets chosen so that the absolute sample positions hit the listed values.
    ii = torch.arange(H, dtype=torch.float64).view(1, 1, H, 1)
    jj = torch.arange(W, dtype=torch.float64).view(1, 1, 1, W)
    ky = torch.arange(3, dtype=torch.float64).repeat_interleave(3).view(1, 9, 1, 1)
    kx = torch.arange(3, dtype=torch.float64).repeat(3).view(1, 9, 1, 1)
    ty = vals[torch.randint(len(vals), (B, 9, H, W), generator=g)].double()
    tx = vals[torch.randint(len(vals), (B, 9, H, W), generator=g)].double()
    offset = torch.stack((ty - (ii - 1 + ky), tx - (jj - 1 + kx)), 2).view(B, 18, H, W)
    mask = torch.rand(B, 9, H, W, dtype=torch.float64, generator=g)
    ref = _loop_deform_conv(inp, offset, weight, None, (1, 1), (1, 1), (1, 1), mask)
    for method in METHODS:
        out = deform_conv2d(inp, offset, weight, None, padding=1, mask=mask, method=method)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10, msg=method)


@pytest.mark.parametrize("method", ["project", "project_grid", "gather", "gather_grid"])
@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_deform_conv_gradcheck_every_method_two_offset_groups(method, fast_mode):
    inp = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    offset = (torch.randn(2, 36, 2, 2, dtype=torch.float64) * 0.7).requires_grad_()
    weight = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 18, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(
            a[0], a[1], a[2], None, stride=2, padding=1, mask=a[3], method=method, max_chunk_bytes=1
        ),
        (inp, offset, weight, mask),
        atol=1e-7,
        fast_mode=fast_mode,
    )


def test_auto_method_choices_for_the_devis_mask_head():
    # (Cin, Cout, H, W) of lay1, lay3, lay5 and out_lay at 800x1333.
    assert choose_method(264, 264, 1, 9, (25, 42), 25 * 42) == "gather"
    assert choose_method(136, 64, 1, 9, (50, 84), 50 * 84) == "project"
    assert choose_method(32, 16, 1, 9, (200, 334), 200 * 334) == "project"
    assert choose_method(16, 1, 1, 9, (200, 334), 200 * 334) == "project_grid"
    with pytest.raises(ValueError, match="unknown method"):
        deform_conv2d(torch.randn(1, 2, 5, 5), torch.zeros(1, 18, 5, 5), torch.randn(2, 2, 3, 3), padding=1,
                      method="fast")  # fmt: skip


def test_module_fused_offset_conv_matches_legacy_path():
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(12, 6, 3, padding=1)
    with torch.no_grad():
        m.offset_conv.weight.normal_(std=0.1)
        m.offset_conv.bias.normal_()
        m.modulator_conv.weight.normal_(std=0.1)
    x = torch.randn(3, 12, 9, 7)
    new = m(x)
    m.method = "legacy"
    torch.testing.assert_close(new, m(x), rtol=1e-5, atol=1e-5)


def test_zero_offsets_unit_mask_equal_regular_conv():
    inp = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    offset = torch.zeros(2, 18, 4, 3, dtype=torch.float64)
    out = deform_conv2d(inp, offset, weight, bias, stride=2, padding=1, dilation=1)
    torch.testing.assert_close(out, F.conv2d(inp, weight, bias, stride=2, padding=1))


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_deform_conv_gradcheck_float64(fast_mode):
    inp = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    offset = (torch.randn(1, 18, 4, 4, dtype=torch.float64) * 0.7).requires_grad_()
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 9, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], padding=1, mask=a[4]),
        (inp, offset, weight, bias, mask),
        atol=1e-7,
        fast_mode=fast_mode,
    )


def test_module_names_init_and_forward():
    m = ModulatedDeformConv2d(264, 8, 3, padding=1)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    # mask_head.lay1.{offset_conv,modulator_conv,regular_conv} in the official state dict (no regular bias)
    assert shapes == {
        "offset_conv.weight": (18, 264, 3, 3),
        "offset_conv.bias": (18,),
        "modulator_conv.weight": (9, 264, 3, 3),
        "modulator_conv.bias": (9,),
        "regular_conv.weight": (8, 264, 3, 3),
    }
    x = torch.randn(2, 264, 5, 4)
    # zero-initialised offsets and modulation 2*sigmoid(0) = 1: the layer starts as a plain conv
    torch.testing.assert_close(m(x), F.conv2d(x, m.regular_conv.weight, padding=1), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        m.offset_conv.bias.fill_(0.5)
        m.modulator_conv.bias.fill_(1.0)
    out = m(x)
    out.sum().backward()
    assert m.offset_conv.weight.grad.abs().sum() > 0 and m.modulator_conv.weight.grad.abs().sum() > 0


def test_bad_offset_shape_is_reported():
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(torch.randn(1, 2, 5, 5), torch.zeros(1, 17, 5, 5), torch.randn(2, 2, 3, 3), padding=1)


def test_nan_offset_gives_nan_at_that_pixel_only():
    x = torch.randn(1, 4, 5, 7)
    off = torch.zeros(1, 18, 5, 7)
    off[0, 1, 2, 3] = float("nan")
    mask = torch.ones(1, 9, 5, 7)
    for method in METHODS:
        out = deform_conv2d(x, off, torch.randn(2, 4, 3, 3), padding=1, mask=mask, method=method)
        assert torch.isnan(out).nonzero().tolist() == [[0, 0, 2, 3], [0, 1, 2, 3]], method


def test_empty_batch_gives_empty_output_and_zero_grads():
    m = ModulatedDeformConv2d(6, 4, 3, padding=1)
    x = torch.zeros(0, 6, 5, 7, requires_grad=True)
    out = m(x)
    assert out.shape == (0, 4, 5, 7)
    out.sum().backward()
    for p in m.parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0
