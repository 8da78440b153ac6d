"""Config keys of the DETR-style backbones (ResNet, Swin) under ``MODEL.BACKBONE*``, defined once here.

Methods that use these backbones call :func:`add_backbone_config` from their own ``add_*_config``.
"""

from __future__ import annotations

from vidseg.config import CfgNode

__all__ = ["add_backbone_config"]


def add_backbone_config(cfg: CfgNode) -> None:
    """Add ``MODEL.BACKBONE``, ``MODEL.BACKBONE_DILATION`` and ``MODEL.BACKBONE_PRETRAINED`` in place."""
    m = cfg.MODEL
    m.BACKBONE = "resnet50"  # resnet18|34|50|101, swin_{t,s,b}_p4w7, swin_l_p4w7, swin_l_p4w12
    m.BACKBONE_DILATION = False  # DC5 (ResNet-50/101 only)
    m.BACKBONE_PRETRAINED = ""  # ImageNet weights (torchvision / original Swin naming); "" = random init
