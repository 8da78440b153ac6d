"""Modulated deformable convolution (DCNv2) in pure PyTorch, with ``torchvision.ops.deform_conv2d`` semantics.

For output pixel ``(i, j)`` and kernel tap ``k = ki * kw + kj`` the input is read at
``y = i * stride_h - pad_h + ki * dil_h + dy``, ``x = j * stride_w - pad_w + kj * dil_w + dx`` where
``(dy, dx) = offset[:, 2k : 2k + 2]`` (per offset group), bilinearly with zeros outside the image (a read at
``y <= -1`` or ``y >= H`` is zero), multiplied by ``mask[:, k]``; the result is a convolution of those samples
with ``weight``. All taps of all output pixels are gathered with one ``grid_sample`` call, then contracted
with
the weight in one batched matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution v1 (``mask=None``) / v2.

    Args:
        input: ``[B, Cin, H, W]``.
        offset: ``[B, 2 * G * kh * kw, Ho, Wo]``, ``(dy, dx)`` per tap, ``G`` offset groups (``Cin % G ==
        0``).
        weight: ``[Cout, Cin / groups, kh, kw]`` (the number of weight groups is ``Cin / weight.shape[1]``).
        bias: ``[Cout]`` or None.
        mask: ``[B, G * kh * kw, Ho, Wo]`` modulation per tap, or None (all ones).

    Returns:
        ``[B, Cout, Ho, Wo]``.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    B, Cin, H, W = input.shape
    Cout, Cin_g, kh, kw = weight.shape
    K = kh * kw
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if Cin % Cin_g != 0 or Cout % (Cin // Cin_g) != 0:
        raise ValueError(f"deform_conv2d: weight {tuple(weight.shape)} does not fit input channels {Cin}")
    n_wgroups = Cin // Cin_g
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

    dt, dev = input.dtype, input.device
    off = offset.view(B, G, K, 2, Ho, Wo)
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dh  # [K]
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dw
    base_y = torch.arange(Ho, device=dev, dtype=dt) * sh - ph  # [Ho]
    base_x = torch.arange(Wo, device=dev, dtype=dt) * sw - pw
    py = (ki[:, None, None] + base_y[None, :, None]) + off[:, :, :, 0]  # [B, G, K, Ho, Wo]
    px = (kj[:, None, None] + base_x[None, None, :]) + off[:, :, :, 1]
    # pixel -> grid_sample coordinates (align_corners=False): g = (2 * p + 1) / size - 1
    grid = torch.stack(((2 * px + 1) / W - 1, (2 * py + 1) / H - 1), dim=-1).view(B * G, K * Ho, Wo, 2)
    cols = F.grid_sample(
        input.reshape(B * G, Cin // G, H, W), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).view(B, G, Cin // G, K, Ho, Wo)
    if mask is not None:
        cols = cols * mask.view(B, G, 1, K, Ho, Wo)
    # [B, Gw, Cin_g * K, Ho * Wo] @ weight [Gw, Cout_g, Cin_g * K]
    cols = cols.reshape(B, n_wgroups, Cin_g * K, Ho * Wo)
    w = weight.reshape(n_wgroups, Cout // n_wgroups, Cin_g * K)
    out = torch.matmul(w[None], cols).view(B, Cout, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, Cout, 1, 1)
    return out


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer as in the DeVIS mask head: ``offset_conv`` (-> ``2*kh*kw`` offsets, zero-initialised),
    ``modulator_conv`` (-> ``kh*kw`` logits, zero-initialised; modulation = ``2 * sigmoid``, so 1 at init) and
    ``regular_conv`` (whose weight and optional bias are applied deformably; no bias in the official model).

    forward: ``[B, Cin, H, W]`` -> ``[B, Cout, Ho, Wo]``. At initialisation it equals ``regular_conv``.
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

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset_conv(x)
        modulator = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return deform_conv2d(
            x,
            offset,
            self.regular_conv.weight,
            self.regular_conv.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=modulator,
        )
