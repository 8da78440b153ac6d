"""Backbones with a features-only interface: ``build_backbone(name, ...)`` -> maps + channels/strides."""

from vidseg.backbones.base import FEATURE_NAMES, Backbone, downsample_mask, feature_masks
from vidseg.backbones.build import build_backbone, freeze_stages, list_backbones
from vidseg.backbones.resnet import ResNet
from vidseg.backbones.swin import SwinTransformer

__all__ = [
    "FEATURE_NAMES",
    "Backbone",
    "ResNet",
    "SwinTransformer",
    "build_backbone",
    "downsample_mask",
    "feature_masks",
    "freeze_stages",
    "list_backbones",
]
