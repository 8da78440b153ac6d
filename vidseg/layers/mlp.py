"""Multi-layer perceptron with ReLU between layers (DETR box head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers ``input_dim -> hidden_dim -> ... -> output_dim`` with ReLU in between.

    Submodules are ``layers.{i}`` so official keys like ``bbox_embed.0.layers.{0,1,2}.weight`` load by name.
    Input ``[..., input_dim]`` -> output ``[..., output_dim]`` (no activation after the last layer).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP: num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x
