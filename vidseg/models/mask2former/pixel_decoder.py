"""The MSDeformAttn pixel decoder of Mask2Former (grattvis.md §2.2).

res3..res5 are projected to ``conv_dim`` channels, refined jointly by a deformable-attention encoder over the
three levels, and res2 joins them through one FPN step, giving the stride-4 map that the masks are read from.

Official names (under ``sem_seg_head.pixel_decoder.``): ``input_proj.{0,1,2}.{0 (conv), 1 (GN)}``
(``0`` is res5: coarse first), ``transformer.level_embed`` ``[3, C]`` (a bare parameter),
``transformer.encoder.layers.{i}.{self_attn.*, norm1, linear1, linear2, norm2}``,
``adapter_1.{weight, norm}``, ``layer_1.{weight, norm}`` and ``mask_features``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.layers.position_encoding import PositionEmbeddingSine
from vidseg.models.deformable_detr.transformer import DeformableTransformerEncoderLayer
from vidseg.ops import MSDeformAttn

__all__ = ["MSDeformAttnPixelDecoder", "DeformableEncoderLayer", "DeformableEncoder", "Conv2dNorm"]


def c2_xavier_fill(module: nn.Module) -> None:
    """detectron2's "Caffe2 Xavier" init: kaiming-uniform with ``a=1`` and a zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


class Conv2dNorm(nn.Conv2d):
    """A conv with its norm as the child ``norm`` (detectron2's ``Conv2d(..., norm=...)``) and an optional
    ReLU after it: keys ``{weight, bias?, norm.weight, norm.bias}``."""

    def __init__(self, *args, norm: nn.Module | None = None, relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def _group_norm(norm: str, channels: int) -> nn.Module | None:
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm in ("", "none", None):
        return None
    raise ValueError(f"MODEL.SEM_SEG_HEAD.NORM: {norm!r} is not supported (GN or '')")


def DeformableEncoderLayer(  # noqa: N802 - a layer factory, named as the layer it returns
    d_model: int = 256,
    d_ffn: int = 1024,
    dropout: float = 0.0,
    n_levels: int = 3,
    n_heads: int = 8,
    n_points: int = 4,
    impl: str = "auto",
) -> DeformableTransformerEncoderLayer:
    """The post-norm deformable encoder layer of Deformable DETR (the same module and names) with an
    ``MSDeformAttn`` over the decoder's levels.

    Forward: ``src [B, S, C]``, ``pos [B, S, C]``, ``reference_points [B, S, L, 2]``,
    ``spatial_shapes [L, 2]``, ``level_start_index [L]``, ``padding_mask [B, S]`` or None -> ``[B, S, C]``.
    """
    attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=impl)
    return DeformableTransformerEncoderLayer(attn, d_model, d_ffn, dropout)


class DeformableEncoder(nn.Module):
    """``num_layers`` :class:`DeformableEncoderLayer` s (``layers.{i}``) over the flattened levels."""

    def __init__(self, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes: Tensor, batch: int, device: torch.device) -> Tensor:
        """Pixel centres ``((j+0.5)/W_l, (i+0.5)/H_l)`` of every level, repeated over the levels (valid
        ratios are 1: the official decoder never masks padding), ``[B, S, L, 2]``."""
        refs = []
        for h, w in spatial_shapes.tolist():
            ys, xs = torch.meshgrid(
                (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h,
                (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w,
                indexing="ij",
            )
            refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
        ref = torch.cat(refs, 0)
        return ref[None, :, None].expand(batch, -1, spatial_shapes.shape[0], -1)

    def forward(self, src, pos, spatial_shapes, level_start_index, padding_mask=None) -> Tensor:
        ref = self.reference_points(spatial_shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, level_start_index, padding_mask)
        return src


class _EncoderOnly(nn.Module):
    """Holds ``level_embed`` and ``encoder`` so that the keys read ``transformer.level_embed`` and
    ``transformer.encoder.layers.*`` as in the official file."""

    def __init__(self, num_levels: int, d_model: int, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        self.encoder = DeformableEncoder(num_layers, d_model=d_model, n_levels=num_levels, **layer_kwargs)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder.

    Args:
        in_channels: backbone channels, ``{"res2": 256, "res3": 512, ...}``.
        transformer_in_features: the encoder's levels, fine to coarse (``("res3", "res4", "res5")``).
        conv_dim: encoder and FPN width (256); mask_dim: channels of ``mask_features`` (256).
        norm: ``"GN"`` (GroupNorm(32)) or ``""``.
        num_layers / d_ffn / n_heads / n_points / dropout: the deformable encoder (6 / 1024 / 8 / 4 / 0).
        common_stride: the stride of the output map (4): one FPN step per halving below the finest encoder
            level.
        impl: deformable attention backend (``MODEL.DEFORM_ATTN_IMPL``).
        force_fp32: run in fp32 even under autocast (the default, as the official code does: its CUDA
            MSDeformAttn op has no half-precision kernel, so it wraps ``forward_features`` in
            ``autocast(enabled=False)``). False runs under the ambient autocast (bf16 on the Triton MSDA).

    Forward: ``features {name: [B, C_f, H_f, W_f]}`` -> dict with ``"mask_features"`` ``[B, mask_dim, H/4,
    W/4]`` (after the 1x1 conv), ``"clip_mask_features"`` ``[B, conv_dim, H/4, W/4]`` (the raw stride-4 map,
    what the VIS head reads) and ``"multi_scale_features"``: 3 maps ``[B, conv_dim, H_l, W_l]``, coarse
    first (strides 32, 16, 8).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "GN",
        num_layers: int = 6,
        d_ffn: int = 1024,
        n_heads: int = 8,
        n_points: int = 4,
        dropout: float = 0.0,
        common_stride: int = 4,
        strides: Mapping[str, int] | None = None,
        impl: str = "auto",
        force_fp32: bool = True,
    ) -> None:
        super().__init__()
        strides = dict(strides or {"res2": 4, "res3": 8, "res4": 16, "res5": 32})
        missing = [f for f in transformer_in_features if f not in in_channels]
        if missing:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: no {missing}")
        # Coarse first, as the official ``input_proj.0`` is res5.
        self.transformer_in_features = sorted(transformer_in_features, key=lambda f: -strides[f])
        self.in_features = sorted(in_channels, key=lambda f: strides[f])
        self.force_fp32 = force_fp32
        self.num_levels = len(self.transformer_in_features)
        self.input_proj = nn.ModuleList()
        for f in self.transformer_in_features:
            conv = nn.Conv2d(in_channels[f], conv_dim, 1)
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.constant_(conv.bias, 0)
            self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(32, conv_dim)))
        self.transformer = _EncoderOnly(
            self.num_levels,
            conv_dim,
            num_layers,
            d_ffn=d_ffn,
            dropout=dropout,
            n_heads=n_heads,
            n_points=n_points,
            impl=impl,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        c2_xavier_fill(self.mask_features)
        finest = min(strides[f] for f in self.transformer_in_features)
        self.num_fpn_levels = max(int(round(math.log2(finest / common_stride))), 0)
        # FPN inputs: the finest backbone maps below the encoder, coarse first (res2 for R50).
        fpn_features = [f for f in self.in_features if strides[f] < finest][: self.num_fpn_levels][::-1]
        if len(fpn_features) != self.num_fpn_levels:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES {self.in_features}: {self.num_fpn_levels} map(s) finer than "
                f"stride {finest} are needed to reach COMMON_STRIDE {common_stride}"
            )
        self.fpn_features = fpn_features
        for idx, f in enumerate(fpn_features):
            lateral = Conv2dNorm(
                in_channels[f], conv_dim, 1, bias=norm == "", norm=_group_norm(norm, conv_dim)
            )
            output = Conv2dNorm(
                conv_dim, conv_dim, 3, padding=1, bias=norm == "", norm=_group_norm(norm, conv_dim), relu=True
            )
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)

    def _autocast(self, device: torch.device):
        # fp32 by default, as the official decoder (autocast(enabled=False)): its CUDA MSDeformAttn op has no
        # half-precision kernel. The Triton MSDA has one, so force_fp32=False may run this under bf16.
        if self.force_fp32:
            return torch.autocast(device.type, enabled=False)
        return contextlib.nullcontext()

    def forward(self, features: Mapping[str, Tensor]) -> dict:
        device = next(iter(features.values())).device
        with self._autocast(device):
            return self._forward(features)

    def _forward(self, features: Mapping[str, Tensor]) -> dict:
        srcs, pos = [], []
        for lvl, f in enumerate(self.transformer_in_features):
            x = features[f].float() if self.force_fp32 else features[f]
            srcs.append(self.input_proj[lvl](x))
            # The official decoder encodes positions as if nothing were padded (an all-False mask).
            mask = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
            pos.append(self.pe_layer(mask).to(srcs[-1].dtype))
        shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
        start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.transformer.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos)
            ],
            1,
        )
        memory = self.transformer.encoder(src_flat, pos_flat, shapes, start)
        b = memory.shape[0]
        sizes = (shapes[:, 0] * shapes[:, 1]).tolist()
        outs = [
            m.transpose(1, 2).reshape(b, -1, int(h), int(w))
            for m, (h, w) in zip(memory.split(sizes, 1), shapes.tolist())
        ]
        for idx, f in enumerate(self.fpn_features):
            x = features[f].float() if self.force_fp32 else features[f]
            cur = getattr(self, f"adapter_{idx + 1}")(x)
            y = cur + F.interpolate(outs[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(getattr(self, f"layer_{idx + 1}")(y))
        return {
            "mask_features": self.mask_features(outs[-1]),
            "clip_mask_features": outs[-1],
            "multi_scale_features": outs[: self.num_levels],
        }
