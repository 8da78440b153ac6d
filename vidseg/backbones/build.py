"""``build_backbone``: one entry point that maps a name to a features-only backbone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from vidseg.backbones.base import FEATURE_NAMES, Backbone
from vidseg.backbones.resnet import ResNet, resnet_names
from vidseg.backbones.swin import SWIN_SPECS, SwinTransformer
from vidseg.utils.param_groups import freeze_matching


def _make_resnet(name: str, dilation: bool, out_indices: tuple[int, ...]) -> nn.Module:
    return ResNet(name, dilation=dilation)


def _make_swin(name: str, dilation: bool, out_indices: tuple[int, ...]) -> nn.Module:
    if dilation:
        raise ValueError(f"backbone '{name}': dilation is only available for ResNet-50/101")
    return SwinTransformer(**SWIN_SPECS[name], out_indices=out_indices)


_FACTORIES: dict[str, Callable[[str, bool, tuple[int, ...]], nn.Module]] = {
    **{n: _make_resnet for n in resnet_names()},
    **{n: _make_swin for n in SWIN_SPECS},
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (DeVIS's ``MODEL.BACKBONE`` values)."""
    return list(_FACTORIES)


def build_backbone(
    name: str,
    *,
    train_backbone: bool,
    dilation: bool = False,
    pretrained: str = "",
    out_features: Sequence[str] = FEATURE_NAMES,
) -> Backbone:
    """Build a backbone by name.

    Args:
        name: ``resnet18|34|50|101``, ``swin_{t,s,b}_p4w7``, ``swin_l_p4w7``, ``swin_l_p4w12``.
        train_backbone: ResNet: ``layer2..4`` trainable (stem and ``layer1`` always frozen); Swin: all
            trainable. False freezes everything (DeVIS: ``SOLVER.LR_BACKBONE == 0``).
        dilation: DC5 (ResNet-50/101 only).
        pretrained: path of an ImageNet checkpoint in torchvision ResNet or original Swin naming; loaded with
            :func:`vidseg.checkpoints.load_imagenet_backbone`, which warns with the missing/unexpected keys.
        out_features: subset of ``res2..res5`` to return.
    """
    if name not in _FACTORIES:
        raise KeyError(f"unknown backbone '{name}'; known: {list_backbones()}")
    out_indices = tuple(sorted(FEATURE_NAMES.index(f) for f in out_features if f in FEATURE_NAMES))
    body = _FACTORIES[name](name, dilation, out_indices)
    backbone = Backbone(name, body, out_features)
    if pretrained:
        from vidseg.checkpoints.imagenet import load_imagenet_backbone

        load_imagenet_backbone(backbone, pretrained)
    body.freeze_for_training(train_backbone)
    return backbone


# Parameter-name prefixes of the stages detectron2's FREEZE_AT counts: the stem, then res2..res5.
_RESNET_STAGES = (("conv1.", "bn1."), ("layer1.",), ("layer2.",), ("layer3.",), ("layer4.",))
_SWIN_STAGES = (("patch_embed.",), ("layers.0.",), ("layers.1.",), ("layers.2.",), ("layers.3.",))


def freeze_stages(backbone: Backbone, freeze_at: int) -> list[str]:
    """detectron2's ``FREEZE_AT``: the first ``freeze_at`` stages (stem = 1, then ``res2``..) frozen, every
    other backbone parameter trainable (0 trains everything). Returns the frozen names."""
    body = backbone.body
    resnet = tuple(p for stage in _RESNET_STAGES for p in stage)
    stages = _RESNET_STAGES if any(n.startswith(resnet) for n, _ in body.named_parameters()) else _SWIN_STAGES
    prefixes = tuple(p for stage in stages[: max(0, int(freeze_at))] for p in stage)
    for p in body.parameters():
        p.requires_grad_(True)
    return freeze_matching(body, lambda name: bool(prefixes) and name.startswith(prefixes))

