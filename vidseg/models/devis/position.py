"""DeVIS position encodings of a clip: 2-d sine per frame plus a temporal term (devis.md §2.2).

Held by the joiner as ``backbone.1`` (official key ``def_detr.backbone.1.temporal_embed``). The encoding is
computed per level from that level's padding mask, so the temporal term reaches every level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vidseg.layers import PositionEmbeddingSine

__all__ = ["LearnedTemporalPositionEmbedding", "SineSpatioTemporalPositionEmbedding", "temporal_position"]


class LearnedTemporalPositionEmbedding(nn.Module):
    """``pos[t] = sine_xy(mask[t]) + temporal_embed[t]`` (``MODEL.DEVIS.TEMPORAL_EMBEDDING learned``).

    Args:
        hidden_dim: C (the 2-d sine has C/2 channels per axis).
        num_frames: T; ``temporal_embed`` is ``[T, C]``, drawn from N(0, 1).

    Forward: ``mask [T, H, W]`` bool (True = padding), the frames of one clip -> ``[T, C, H, W]``.
    """

    def __init__(self, hidden_dim: int = 256, num_frames: int = 6):
        super().__init__()
        self.sine = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_frames = num_frames
        self.temporal_embed = nn.Parameter(torch.empty(num_frames, hidden_dim))
        nn.init.normal_(self.temporal_embed)

    def forward(self, mask: Tensor) -> Tensor:
        if mask.shape[0] != self.num_frames:
            raise ValueError(
                f"the learned temporal embedding is built for T={self.num_frames} frames, got a clip of "
                f"{mask.shape[0]} (MODEL.DEVIS.NUM_FRAMES)"
            )
        return self.sine(mask) + self.temporal_embed[:, :, None, None].to(torch.float32)


class SineSpatioTemporalPositionEmbedding(nn.Module):
    """VisTR's x, y, t sine encoding (``MODEL.DEVIS.TEMPORAL_EMBEDDING sine``); no parameters.

    Each axis gets ``F`` channels (the largest even number <= C/3): ``[pos_t | pos_y | pos_x]``, then zero
    channels up to C. Positions are cumulative counts of unpadded pixels (frames for t) normalised to
    ``(0, 2*pi]``. (The official code asserts C = 252; any C works here.)

    Forward: ``mask [T, H, W]`` -> ``[T, C, H, W]``.
    """

    def __init__(self, hidden_dim: int = 256, temperature: float = 10000.0):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_pos_feats = (hidden_dim // 3) // 2 * 2
        self.temperature = temperature

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = ~mask.bool()
        eps, scale = 1e-6, 2 * math.pi
        z = not_mask.cumsum(0, dtype=torch.float32)
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        z = z / (z[-1:] + eps) * scale
        y = y / (y[:, -1:] + eps) * scale
        x = x / (x[:, :, -1:] + eps) * scale
        f = self.num_pos_feats
        dim_t = torch.arange(f, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / f)

        def enc(p: Tensor) -> Tensor:
            p = p[..., None] / dim_t
            return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=4).flatten(3)

        pos = torch.cat((enc(z), enc(y), enc(x)), dim=3).permute(0, 3, 1, 2)
        pad = pos.new_zeros(pos.shape[0], self.hidden_dim - 3 * f, *pos.shape[2:])
        return torch.cat((pos, pad), dim=1)


def temporal_position(kind: str, hidden_dim: int, num_frames: int) -> nn.Module:
    """The position encoding named by ``MODEL.DEVIS.TEMPORAL_EMBEDDING`` (``learned`` or ``sine``)."""
    if kind == "learned":
        return LearnedTemporalPositionEmbedding(hidden_dim, num_frames)
    if kind == "sine":
        return SineSpatioTemporalPositionEmbedding(hidden_dim)
    raise ValueError(f"MODEL.DEVIS.TEMPORAL_EMBEDDING: {kind!r}, expected 'learned' or 'sine'")
