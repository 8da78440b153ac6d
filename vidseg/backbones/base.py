"""The features-only backbone interface shared by every backbone family."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_NAMES = ("res2", "res3", "res4", "res5")


class Backbone(nn.Module):
    """Wraps a body (ResNet or Swin) and returns the requested feature maps.

    The body is stored as ``self.body`` so parameter names start with ``body.``: a Joiner-style
    ``nn.ModuleList([backbone, position_encoding])`` inside the detector reproduces the official
    ``backbone.0.body.*`` keys.

    Attributes:
        name: registry name (e.g. ``"resnet50"``).
        out_features: keys returned by ``forward``, a subset of ``res2..res5``, in increasing stride.
        out_channels: ``{feature: channels}`` for ``out_features``.
        strides: ``{feature: stride}`` for ``out_features`` (``res5`` is 16 with a dilated ResNet).

    Forward: ``x [B, 3, H, W]`` (normalised image) -> ``{feature: [B, C, H_f, W_f]}`` with
    ``H_f = ceil(H / stride)`` (inputs need not be multiples of 32).
    """

    def __init__(self, name: str, body: nn.Module, out_features: Sequence[str] = FEATURE_NAMES) -> None:
        super().__init__()
        unknown = [f for f in out_features if f not in body.out_channels]
        if unknown or not out_features:
            raise ValueError(
                f"backbone '{name}': out_features {list(out_features)} must be a non-empty subset of "
                f"{list(body.out_channels)}"
            )
        self.name = name
        self.body = body
        self.out_features = tuple(sorted(out_features, key=FEATURE_NAMES.index))
        self.out_channels = {f: body.out_channels[f] for f in self.out_features}
        self.strides = {f: body.strides[f] for f in self.out_features}

    @property
    def num_channels(self) -> list[int]:
        """Channels in ``out_features`` order (the DETR-style list form)."""
        return [self.out_channels[f] for f in self.out_features]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"backbone '{self.name}': expected images [B,3,H,W], got {tuple(x.shape)}")
        feats = self.body(x)
        return {f: feats[f] for f in self.out_features}


def downsample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a padding mask ``[B, H, W]`` bool (True = pad) to ``[B, *size]`` bool."""
    return F.interpolate(mask[None].float(), size=tuple(size)).to(torch.bool)[0]


def feature_masks(mask: torch.Tensor, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Padding mask per feature map: ``{name: [B, H_f, W_f]}`` bool, from ``mask [B, H, W]``."""
    return {k: downsample_mask(mask, v.shape[-2:]) for k, v in features.items()}
