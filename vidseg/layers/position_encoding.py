"""2-D sine position encoding (DETR / Deformable DETR / DeVIS / Mask2Former)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of the (y, x) position of every valid pixel.

    Positions are the cumulative count of non-padded pixels along each axis (1-based), so padding does not
    shift the encoding of real pixels. With ``normalize`` they are divided by the count at the last row/column
    (+1e-6) and multiplied by ``scale`` (2π), i.e. they span (0, 2π] over the valid area. Channel ``2i`` of
    each half is ``sin(p / T^(2i/F))`` and ``2i+1`` is ``cos(p / T^(2i/F))`` with ``F = num_pos_feats``, ``T =
    temperature``. Output channels are ``[pos_y (F) | pos_x (F)]``.

    Args:
        num_pos_feats: F, channels per axis (output has 2F channels).
        temperature: T.
        normalize: normalise positions to ``(0, scale]``.
        scale: only with ``normalize``; default 2π.
        offset: added to the 1-based positions before normalising (0 in DETR/DeVIS; Deformable DETR's
            own code uses -0.5).

    Forward: ``mask [B, H, W]`` bool, True = padding -> ``[B, 2F, H, W]`` float32.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float | None = None,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: 'scale' is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self.offset = offset

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        if mask.dim() != 3:
            raise ValueError(f"PositionEmbeddingSine: mask must be [B,H,W], got shape {tuple(mask.shape)}")
        not_mask = ~mask.bool()
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)

        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # Interleave sin (even channels) and cos (odd channels) of each frequency.
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale:.4f}"
        )
