"""Small reusable layers: frozen BatchNorm, sine position encoding, MLP, drop path."""

from vidseg.layers.drop_path import DropPath, drop_path
from vidseg.layers.frozen_bn import FrozenBatchNorm2d
from vidseg.layers.mlp import MLP
from vidseg.layers.position_encoding import PositionEmbeddingSine

__all__ = ["DropPath", "FrozenBatchNorm2d", "MLP", "PositionEmbeddingSine", "drop_path"]
