"""ResNet-18/34/50/101 bodies with frozen BatchNorm, named like torchvision so ImageNet weights load by name.

Module names (``conv1, bn1, layer1..4.{b}.{conv1..3, bn1..3, downsample.0/1}``) reproduce the official DeVIS
state-dict keys under ``def_detr.backbone.0.body.*``. There is no ``fc``/``avgpool``: the body only produces
feature maps.
"""

from __future__ import annotations

import torch
from torch import nn

from vidseg.layers import FrozenBatchNorm2d


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, width, stride, dilation)
        self.bn1 = FrozenBatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, 1, dilation)
        self.bn2 = FrozenBatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, "ResNet v1.5" as torchvision) -> 1x1 with 4x expansion (ResNet-50/101)."""

    expansion = 4

    def __init__(
        self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = FrozenBatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = FrozenBatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = FrozenBatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_SPECS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet body returning ``{"res2": /4, "res3": /8, "res4": /16, "res5": /32}`` maps.

    Args:
        depth_name: ``resnet18|34|50|101``.
        dilation: replace the stride of ``layer4`` by dilation 2 (DC5): ``res5`` stays at /16.

    Forward: ``x [B, 3, H, W]`` -> dict of ``[B, C_l, ceil(H/s_l), ceil(W/s_l)]``.
    Attributes ``out_channels`` and ``strides`` are dicts keyed like the output.
    """

    def __init__(self, depth_name: str, dilation: bool = False) -> None:
        super().__init__()
        if depth_name not in _SPECS:
            raise KeyError(f"unknown ResNet '{depth_name}'; known: {sorted(_SPECS)}")
        block, layers = _SPECS[depth_name]
        if dilation and block is BasicBlock:
            raise ValueError(
                f"{depth_name}: dilation (DC5) is only supported for bottleneck ResNets (50/101)"
            )
        self.in_ch = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilation)
        exp = block.expansion
        self.out_channels = {"res2": 64 * exp, "res3": 128 * exp, "res4": 256 * exp, "res5": 512 * exp}
        self.strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 16 if dilation else 32}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self, block: type[nn.Module], width: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            # Keep the resolution, grow the receptive field instead (torchvision's
            # replace_stride_with_dilation).
            self.dilation *= stride
            stride = 1
        downsample = None
        out_ch = width * block.expansion
        if stride != 1 or self.in_ch != out_ch:
            downsample = nn.Sequential(_conv1x1(self.in_ch, out_ch, stride), FrozenBatchNorm2d(out_ch))
        layers = [block(self.in_ch, width, stride, downsample, previous_dilation)]
        self.in_ch = out_ch
        layers += [block(self.in_ch, width, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return {"res2": res2, "res3": res3, "res4": res4, "res5": res5}

    def freeze_for_training(self, train_backbone: bool) -> None:
        """DETR rule: stem and ``layer1`` never train; ``layer2..4`` train only when ``train_backbone``."""
        for name, p in self.named_parameters():
            trainable = train_backbone and name.startswith(("layer2.", "layer3.", "layer4."))
            p.requires_grad_(trainable)


def resnet_names() -> list[str]:
    return list(_SPECS)
