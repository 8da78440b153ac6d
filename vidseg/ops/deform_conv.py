"""Modulated deformable convolution (DCNv2) in pure PyTorch, with ``torchvision.ops.deform_conv2d`` semantics.

For output pixel ``(i, j)`` and kernel tap ``k = ki * kw + kj`` the input is read at
``y = i * stride_h - pad_h + ki * dil_h + dy``, ``x = j * stride_w - pad_w + kj * dil_w + dx`` where
``(dy, dx) = offset[:, 2k : 2k + 2]`` (per offset group), bilinearly with zeros outside the image (a read at
``y <= -1`` or ``y >= H`` is zero), multiplied by ``mask[:, k]``; the result is a convolution of those samples
with ``weight``.

Exact formulations, chosen per call by a rough CPU cost model (``method="auto"``, :func:`choose_method`):

- ``"project"``: bilinear sampling commutes with a per-pixel linear map, so the input is first multiplied by
  the weight of every tap (``[H*W, Cin] @ [Cin, K*Cout]``), then each output pixel gathers its ``4 * K``
  (corner, tap) rows of ``Cout`` values with one ``F.embedding_bag`` (a weighted sum of table rows, which is
  what bilinear sampling is), weighted by ``bilinear * modulation``: the modulation and the tap sum are fused
  into the gather and nothing of im2col size exists. Cheapest when ``Cout < Cin`` (the DeVIS mask head after
  its first layer).
- ``"project_grid"``: the same projection, then ``grid_sample`` of the ``Cout`` channels of each tap. Lowest
  fixed cost per sample; wins for very few output channels (the mask head's ``out_lay``, ``Cout = 1``).
- ``"gather"``: im2col with ``embedding_bag`` (4 corner rows of ``Cin`` values from the channels-last input
  per (pixel, tap)), then one matmul. ``"gather_grid"``: im2col with one ``grid_sample``.

Work is split into chunks of whole images so the largest temporaries stay near ``max_chunk_bytes``. The
former single whole-batch ``grid_sample`` formulation is kept as ``method="legacy"`` (benchmark reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

__all__ = ["deform_conv2d", "ModulatedDeformConv2d", "choose_method", "DEFAULT_CHUNK_BYTES", "METHODS"]

DEFAULT_CHUNK_BYTES = 32 * 2**20  # per-chunk temporaries stay cache/allocator friendly (best of 8-96 MiB)
METHODS = ("auto", "project", "project_grid", "gather", "gather_grid", "legacy")


def _check_shapes(input: Tensor, offset: Tensor, weight: Tensor, bias, mask, stride, padding, dilation):
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    B, Cin, H, W = input.shape
    Cout, Cin_g, kh, kw = weight.shape
    K = kh * kw
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if Cin % Cin_g != 0 or Cout % (Cin // Cin_g) != 0:
        raise ValueError(f"deform_conv2d: weight {tuple(weight.shape)} does not fit input channels {Cin}")
    if offset.dim() != 4 or offset.shape[0] != B or offset.shape[1] % (2 * K) or offset.shape[2:] != (Ho, Wo):
        raise ValueError(
            f"deform_conv2d: offset must be [B={B}, 2*G*{K}, Ho={Ho}, Wo={Wo}], got {tuple(offset.shape)}"
        )
    G = offset.shape[1] // (2 * K)
    if Cin % G != 0:
        raise ValueError(f"deform_conv2d: {G} offset groups do not divide {Cin} input channels")
    if mask is not None and mask.shape != (B, G * K, Ho, Wo):
        raise ValueError(f"deform_conv2d: mask must be {(B, G * K, Ho, Wo)}, got {tuple(mask.shape)}")
    if bias is not None and bias.shape != (Cout,):
        raise ValueError(f"deform_conv2d: bias must be [{Cout}], got {tuple(bias.shape)}")
    return G, Ho, Wo


def _sample_positions(
    offset: Tensor, kh: int, kw: int, stride, padding, dilation, shift: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (plus ``shift``) read by every (output pixel, group, tap): ``py, px``
    ``[B, Ho, Wo, G, K]``.

    Pixel-major so that one output pixel's samples are adjacent (the bags of ``embedding_bag``).
    """
    B, _, Ho, Wo = offset.shape
    K = kh * kw
    dt, dev = offset.dtype, offset.device
    off = offset.permute(0, 2, 3, 1).reshape(B, Ho, Wo, -1, K, 2)
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dilation[0]  # [K]
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dilation[1]
    base_y = torch.arange(Ho, device=dev, dtype=dt) * stride[0] + (shift - padding[0])  # [Ho]
    base_x = torch.arange(Wo, device=dev, dtype=dt) * stride[1] + (shift - padding[1])
    py = (base_y.view(Ho, 1, 1, 1) + ki) + off[..., 0]
    px = (base_x.view(1, Wo, 1, 1) + kj) + off[..., 1]
    return py, px


def _bilinear_bags(
    py: Tensor,
    px: Tensor,
    scale: Tensor | None,
    H: int,
    W: int,
    per_pixel: int,
    sub: Tensor | None,
    corners_last: bool,
) -> tuple[Tensor, Tensor]:
    """Table rows and weights of the four bilinear corners of every sample ``[b, Ho, Wo, G, K]``.

    Layout ``[b, Ho, Wo, G, K, 4]`` (``corners_last``: one bag per tap) or ``[b, Ho, Wo, 4, G * K]`` (one bag
    per output pixel; the order inside a bag is free, and keeping ``G * K`` innermost avoids slow strided
    writes of 4-element rows).

    The table holds each image zero-padded by one pixel before and two after (``(H + 3) x (W + 3)`` pixels,
    ``per_pixel`` rows per pixel, row ``(image * padded pixels + padded pixel) * per_pixel + sub``).
    Clamping a sample to ``[-1, H] x [-1, W]`` then gives exactly torchvision's zero padding: a sample at
    ``y <= -1`` or ``y >= H`` only touches zero rows, one inside reads its real corners, and the corners are
    fixed offsets of the top-left one (no per-corner bounds checks). Outside that range the output does not
    depend on the position, so the clamp's zero gradient is also the right one. ``scale`` (the modulation,
    shaped like ``py``) is folded into the weights. ``py``/``px``/``scale`` are ``[b, Ho, Wo, G, K]`` in
    padded coordinates (pixel + 1, see ``_sample_positions(shift=1)``); ``sub`` broadcasts against ``[G, K]``.
    Differentiable w.r.t. ``py``, ``px`` and ``scale``; without autograd ``py``/``px`` are overwritten and the
    outputs written in place (each pass over memory is what this costs on CPU).
    """
    b = py.shape[0]
    wp, hwp = W + 3, (H + 3) * (W + 3)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (py, px, scale))
    # Padded coordinates are >= 0 after the clamp, so truncation is floor.
    py, px = (py.clamp(0, H + 1), px.clamp(0, W + 1)) if grad else (py.clamp_(0, H + 1), px.clamp_(0, W + 1))
    itype = torch.int32 if b * hwp * per_pixel < 2**31 else torch.int64
    # The integer clamp only matters for NaN positions (cast to INT_MIN): they index a valid row while their
    # NaN weights still make the output NaN, as a NaN offset should.
    y0, x0 = py.to(itype).clamp_(0, H + 1), px.to(itype).clamp_(0, W + 1)
    ly, lx = (py - y0, px - x0) if grad else (py.sub_(y0), px.sub_(x0))
    wy_hi = ly if scale is None else ly * scale  # weight of the lower row (y0 + 1)
    wy_lo = (1 - ly) if scale is None else scale - wy_hi
    # Per (image, group, tap) constant: image offset and sub-row.
    shape = [b] + [1] * (py.dim() - 1)
    const = torch.arange(b, device=py.device, dtype=itype).view(shape) * (hwp * per_pixel)
    if sub is not None:
        const = const + sub.to(itype)
    base = y0.mul_(wp * per_pixel).add_(x0.mul_(per_pixel)).add_(const)
    corners = torch.tensor([0, 1, wp, wp + 1], device=py.device, dtype=itype) * per_pixel
    if corners_last:
        wx = torch.stack((1 - lx, lx), -1)
        weights = torch.stack((wy_lo, wy_hi), -1)[..., :, None] * wx[..., None, :]
        return base[..., None] + corners, weights.flatten(-2)
    # [b, Ho, Wo, 4, G*K], corners y-major: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
    wy_lo, wy_hi, lx, base = (t.flatten(-2) for t in (wy_lo, wy_hi, lx, base))
    rows = base[..., None, :] + corners[:, None]
    if grad:
        hx = 1 - lx
        return rows, torch.stack((wy_lo * hx, wy_lo * lx, wy_hi * hx, wy_hi * lx), -2)
    weights = py.new_empty(*base.shape[:-1], 4, base.shape[-1])
    torch.mul(wy_lo, lx, out=weights[..., 1, :])
    torch.sub(wy_lo, weights[..., 1, :], out=weights[..., 0, :])  # wy_lo * (1 - lx)
    torch.mul(wy_hi, lx, out=weights[..., 3, :])
    torch.sub(wy_hi, weights[..., 3, :], out=weights[..., 2, :])
    return rows, weights


def _padded_channels_last(x: Tensor) -> Tensor:
    """``[b, C, H, W]`` -> ``[b, H + 3, W + 3, C]``: one zero row/column before, two after (see above)."""
    b, c, h, w = x.shape
    if torch.is_grad_enabled() and x.requires_grad:
        return F.pad(x, (1, 2, 1, 2)).permute(0, 2, 3, 1).contiguous()
    out = x.new_empty(b, h + 3, w + 3, c)
    out[:, 1 : h + 1, 1 : w + 1] = x.permute(0, 2, 3, 1)
    for border in (out[:, :1], out[:, h + 1 :], out[:, 1 : h + 1, :1], out[:, 1 : h + 1, w + 1 :]):
        border.zero_()
    return out


def _dense_weight(weight: Tensor, Cin: int) -> Tensor:
    """``[Cout, Cin / Gw, kh, kw]`` -> ``[Cout, Cin, K]`` with zeros outside each weight group's block."""
    Cout, Cin_g, kh, kw = weight.shape
    n_wg = Cin // Cin_g
    w = weight.reshape(Cout, Cin_g, kh * kw)
    if n_wg == 1:
        return w
    dense = w.new_zeros(Cout, Cin, kh * kw)
    cog = Cout // n_wg
    for g in range(n_wg):
        dense[g * cog : (g + 1) * cog, g * Cin_g : (g + 1) * Cin_g] = w[g * cog : (g + 1) * cog]
    return dense


def _project_chunk(x: Tensor, py: Tensor, px: Tensor, mask: Tensor | None, w_dense: Tensor) -> Tensor:
    """``"project"`` on one chunk: x ``[b, Cin, H, W]``, py/px ``[b, Ho, Wo, G, K]`` (padded coordinates)
    -> ``[b, Ho, Wo, Cout]``."""
    b, Cin, H, W = x.shape
    _, Ho, Wo, G, K = py.shape
    Cout = w_dense.shape[0]
    cg = Cin // G
    # Table rows ((image * padded pixels + padded pixel) * G + group) * K + tap, each Cout values.
    x_cl = _padded_channels_last(x).view(-1, G, cg)
    w_gk = w_dense.view(Cout, G, cg, K).permute(1, 2, 3, 0).reshape(G, cg, K * Cout)
    if G == 1:
        table = (x_cl[:, 0] @ w_gk[0]).view(-1, Cout)
    else:
        table = torch.bmm(x_cl.transpose(0, 1), w_gk).transpose(0, 1).reshape(-1, Cout)
    gk = torch.arange(G * K, device=x.device).view(G, K)
    rows, wts = _bilinear_bags(py, px, mask, H, W, G * K, gk, corners_last=False)  # [b, Ho, Wo, 4, G*K]
    # One bag per output pixel: all its (corner, group, tap) entries.
    n = G * K * 4
    out = F.embedding_bag(rows.reshape(-1, n), table, mode="sum", per_sample_weights=wts.reshape(-1, n))
    return out.view(b, Ho, Wo, Cout)


def _gather_chunk(x: Tensor, py: Tensor, px: Tensor, mask: Tensor | None, w_dense: Tensor) -> Tensor:
    """``"gather"`` (im2col) on one chunk; same shapes as :func:`_project_chunk`."""
    b, Cin, H, W = x.shape
    _, Ho, Wo, G, K = py.shape
    Cout = w_dense.shape[0]
    cg = Cin // G
    table = _padded_channels_last(x).view(-1, cg)  # rows (image * padded pixels + padded pixel) * G + group
    g = torch.arange(G, device=x.device).view(G, 1) if G > 1 else None
    rows, wts = _bilinear_bags(py, px, mask, H, W, G, g, corners_last=True)  # [b, Ho, Wo, G, K, 4]
    # One bag per (output pixel, group, tap): columns [b*Ho*Wo, (group, tap, channel)].
    cols = F.embedding_bag(rows.reshape(-1, 4), table, mode="sum", per_sample_weights=wts.reshape(-1, 4))
    w = w_dense.view(Cout, G, cg, K).permute(0, 1, 3, 2).reshape(Cout, G * K * cg)
    out = cols.view(b * Ho * Wo, G * K * cg) @ w.t()
    return out.view(b, Ho, Wo, Cout)


def _grid(py: Tensor, px: Tensor, H: int, W: int) -> Tensor:
    """``[b, Ho, Wo, G, K]`` pixel coordinates -> ``grid_sample`` grid ``[b * G * K, Ho, Wo, 2]``."""
    b, Ho, Wo, G, K = py.shape
    # pixel -> grid_sample coordinates (align_corners=False): g = (2 * p + 1) / size - 1
    grid = torch.stack(((2 * px + 1) / W - 1, (2 * py + 1) / H - 1), dim=-1)
    return grid.permute(0, 3, 4, 1, 2, 5).reshape(b * G * K, Ho, Wo, 2)


def _project_grid_chunk(x: Tensor, py: Tensor, px: Tensor, mask: Tensor | None, w_dense: Tensor) -> Tensor:
    """``"project_grid"``: project per tap (a grouped 1x1 conv), sample ``Cout`` channels per tap with
    ``grid_sample``, modulate and sum the taps. Cheapest for very few output channels (``out_lay``)."""
    b, Cin, H, W = x.shape
    _, Ho, Wo, G, K = py.shape
    Cout = w_dense.shape[0]
    cg = Cin // G
    w = w_dense.view(Cout, G, cg, K).permute(1, 3, 0, 2).reshape(G * K * Cout, cg)
    if G == 1:  # a plain matmul is much faster than a 1x1 conv with few output channels on CPU
        y = torch.matmul(w, x.reshape(b, Cin, H * W)).view(b * K, Cout, H, W)
    else:
        y = F.conv2d(x, w[..., None, None], groups=G).view(b * G * K, Cout, H, W)
    s = F.grid_sample(y, _grid(py, px, H, W), mode="bilinear", padding_mode="zeros", align_corners=False)
    s = s.view(b, G * K, Cout, Ho, Wo)
    if mask is not None:
        m = mask.permute(0, 3, 4, 1, 2).reshape(b, G * K, 1, Ho, Wo)
        s = s.mul_(m) if not (torch.is_grad_enabled() and (s.requires_grad or m.requires_grad)) else s * m
    return s.sum(1).permute(0, 2, 3, 1)


def _gather_grid_chunk(x: Tensor, py: Tensor, px: Tensor, mask: Tensor | None, w_dense: Tensor) -> Tensor:
    """``"gather_grid"``: im2col with one ``grid_sample`` over all taps, then one matmul (the former
    formulation, here per chunk)."""
    b, Cin, H, W = x.shape
    _, Ho, Wo, G, K = py.shape
    Cout = w_dense.shape[0]
    cg = Cin // G
    grid = _grid(py, px, H, W).reshape(b * G, K * Ho, Wo, 2)
    cols = F.grid_sample(
        x.reshape(b * G, cg, H, W), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).view(b, G, cg, K, Ho, Wo)
    if mask is not None:
        cols = cols * mask.permute(0, 3, 4, 1, 2).reshape(b, G, 1, K, Ho, Wo)
    out = torch.matmul(w_dense.reshape(Cout, Cin * K), cols.view(b, Cin * K, Ho * Wo))
    return out.view(b, Cout, Ho, Wo).permute(0, 2, 3, 1)


_CHUNK_FNS = {
    "project": _project_chunk,
    "project_grid": _project_grid_chunk,
    "gather": _gather_chunk,
    "gather_grid": _gather_grid_chunk,
}


def _sampling_ns(channels: int) -> tuple[float, float]:
    """Rough CPU cost (ns per sample, i.e. per output pixel, tap and offset group) of gathering
    ``channels`` values: (``embedding_bag`` path, ``grid_sample`` path). Measured on a 2-core x86 CPU; the
    bag path has the larger fixed cost (indices and weights in Python ops), ``grid_sample`` the larger
    per-channel one (the modulation and tap sum run over every sampled channel)."""
    return 40.0 + 3.3 * channels, 8.0 + 7.5 * channels


def choose_method(
    Cin: int, Cout: int, G: int, K: int, in_hw: tuple[int, int], out_pixels: int, n_wgroups: int = 1
) -> str:
    """The cheapest of ``project``, ``project_grid``, ``gather``, ``gather_grid`` by a rough cost model."""
    mac_ns = 0.04
    h, w = in_hw
    samples = G * K * out_pixels
    bag_p, grid_p = _sampling_ns(Cout)
    bag_g, grid_g = _sampling_ns(Cin // G)
    proj_mm = mac_ns * K * Cout * Cin
    gath_mm = mac_ns * K * Cout * (Cin // n_wgroups) * out_pixels
    costs = {
        "project": proj_mm * (h + 3) * (w + 3) + samples * bag_p,
        "project_grid": proj_mm * h * w + samples * grid_p,
        "gather": gath_mm + samples * bag_g,
        "gather_grid": gath_mm + samples * grid_g,
    }
    return min(costs, key=costs.get)


def _chunk_bytes_per_image(method: str, G, K, Cin, Cout, H, W, Ho, Wo, elem: int) -> int:
    """Approximate largest temporaries of one image (used to size the chunks)."""
    samples = G * K * Ho * Wo
    if method in ("project", "gather"):  # corner rows (int32) and weights, plus per-sample intermediates
        extra = samples * (4 * (4 + elem) + 12 * elem)
        if method == "project":
            return extra + (H + 3) * (W + 3) * G * K * Cout * elem
        return extra + samples * (Cin // G) * elem
    extra = samples * 8 * elem  # grid and coordinates
    if method == "project_grid":
        return extra + (H * W + Ho * Wo) * G * K * Cout * elem
    return extra + samples * (Cin // G) * elem


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
    *,
    method: str = "auto",
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """Deformable convolution v1 (``mask=None``) / v2. Differentiable w.r.t. every tensor argument.

    Args:
        input: ``[B, Cin, H, W]``.
        offset: ``[B, 2 * G * kh * kw, Ho, Wo]``, ``(dy, dx)`` per tap, ``G`` offset groups
            (``Cin % G == 0``).
        weight: ``[Cout, Cin / groups, kh, kw]`` (the number of weight groups is ``Cin / weight.shape[1]``).
        bias: ``[Cout]`` or None.
        mask: ``[B, G * kh * kw, Ho, Wo]`` modulation per tap, or None (all ones).
        method: ``"auto"`` (cheapest by :func:`choose_method`), ``"project"``, ``"project_grid"``,
            ``"gather"``, ``"gather_grid"`` or ``"legacy"`` (the former whole-batch formulation, kept as a
            benchmark reference). All give the same result up to float rounding.
        max_chunk_bytes: images are processed in chunks whose largest temporaries are about this size.

    Returns:
        ``[B, Cout, Ho, Wo]`` (contiguous).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if method not in METHODS:
        raise ValueError(f"deform_conv2d: unknown method {method!r} (expected one of {METHODS})")
    G, Ho, Wo = _check_shapes(input, offset, weight, bias, mask, stride, padding, dilation)
    B, Cin, H, W = input.shape
    Cout, Cin_g, kh, kw = weight.shape
    K = kh * kw
    if B == 0:  # no images (e.g. no instances): an empty result that still reaches every input in autograd
        out = F.conv2d(input, weight, bias, stride, padding, dilation, groups=Cin // Cin_g)
        return out + 0 * (offset.sum() + (0 if mask is None else mask.sum()))
    if method == "auto":
        method = choose_method(Cin, Cout, G, K, (H, W), Ho * Wo, Cin // Cin_g)
    # Modulation in the pixel-major layout of the sampling positions: [B, Ho, Wo, G, K].
    m = None if mask is None else mask.permute(0, 2, 3, 1).reshape(B, Ho, Wo, G, K)
    w_dense = _dense_weight(weight, Cin)
    if method == "legacy":  # the former formulation: one grid_sample im2col over the whole batch
        method, step = "gather_grid", B
    else:
        per_image = _chunk_bytes_per_image(method, G, K, Cin, Cout, H, W, Ho, Wo, input.element_size())
        step = max(1, int(max_chunk_bytes // max(per_image, 1)))
    run = _CHUNK_FNS[method]
    shift = 1.0 if method in ("project", "gather") else 0.0  # the bag methods index a zero-padded table
    outs = []
    for s in range(0, B, step):
        e = min(B, s + step)
        py, px = _sample_positions(offset[s:e], kh, kw, stride, padding, dilation, shift)
        outs.append(run(input[s:e], py, px, None if m is None else m[s:e], w_dense))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    if bias is not None:
        out = out + bias
    # The chunks compute channels-last; hand back the usual contiguous NCHW (cheap: Cout channels only).
    return out.permute(0, 3, 1, 2).contiguous()


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer as in the DeVIS mask head: ``offset_conv`` (-> ``2*kh*kw`` offsets, zero-initialised),
    ``modulator_conv`` (-> ``kh*kw`` logits, zero-initialised; modulation = ``2 * sigmoid``, so 1 at init) and
    ``regular_conv`` (whose weight and optional bias are applied deformably; no bias in the official model).

    forward: ``[B, Cin, H, W]`` -> ``[B, Cout, Ho, Wo]``. At initialisation it equals ``regular_conv``.
    The offset and modulator convs read the same input, so they run as one conv with concatenated weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        kh, kw = _pair(kernel_size)
        conv_kw = dict(kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation)
        self.offset_conv = nn.Conv2d(in_channels, 2 * kh * kw, bias=True, **conv_kw)
        self.modulator_conv = nn.Conv2d(in_channels, kh * kw, bias=True, **conv_kw)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, bias=bias, **conv_kw)
        for conv in (self.offset_conv, self.modulator_conv):
            nn.init.constant_(conv.weight, 0.0)
            nn.init.constant_(conv.bias, 0.0)
        self.method = "auto"  # see deform_conv2d; benchmarks switch it to time the reference formulation
        self.max_chunk_bytes = DEFAULT_CHUNK_BYTES

    def forward(self, x: Tensor) -> Tensor:
        n_off = self.offset_conv.out_channels
        if self.method == "legacy":  # the former module: two convs, whole-batch grid_sample
            offset, modulator = self.offset_conv(x), 2.0 * torch.sigmoid(self.modulator_conv(x))
            return deform_conv2d(
                x, offset, self.regular_conv.weight, self.regular_conv.bias, self.stride, self.padding,
                self.dilation, modulator, method="legacy",
            )  # fmt: skip
        both = F.conv2d(
            x,
            torch.cat([self.offset_conv.weight, self.modulator_conv.weight], 0),
            torch.cat([self.offset_conv.bias, self.modulator_conv.bias], 0),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        offset = both[:, :n_off]
        modulator = 2.0 * torch.sigmoid(both[:, n_off:])
        return deform_conv2d(
            x,
            offset.contiguous(),
            self.regular_conv.weight,
            self.regular_conv.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=modulator,
            method=self.method,
            max_chunk_bytes=self.max_chunk_bytes,
        )
