"""ImageNet weights for backbones from local files: torchvision ResNet and original Swin naming."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.checkpoints.report import LoadReport
from vidseg.checkpoints.safe_load import CheckpointError, load_checkpoint_file

logger = logging.getLogger(__name__)

# Classification-only entries: the class head, Swin's final norm (detection uses norm0..3 instead) and buffers
# that are recomputed from the window size.
_CLASSIFIER_PREFIXES = ("fc.", "head.", "norm.")
_RECOMPUTED_SUFFIXES = ("num_batches_tracked", "attn_mask", "relative_position_index")
_WRAPPED_PREFIXES = ("def_detr.backbone.0.body.", "backbone.0.body.", "body.", "backbone.")


def resize_relative_position_bias(table: torch.Tensor, window: int) -> torch.Tensor:
    """Bicubic resize of a Swin bias table ``[(2w0-1)^2, heads]`` to ``[(2w-1)^2, heads]``."""
    n, heads = table.shape
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"relative_position_bias_table with {n} rows is not square")
    new = 2 * window - 1
    if side == new:
        return table
    grid = table.T.reshape(1, heads, side, side).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.reshape(heads, new * new).T.to(table.dtype).contiguous()


def map_imagenet_state_dict(
    state_dict: dict[str, torch.Tensor], body_state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """ImageNet (torchvision ResNet / original Swin) keys -> backbone ``body.*`` keys.

    Drops the classifier and recomputed buffers (returned as ``dropped``) and resizes Swin relative position
    bias tables when the window differs. ``body_state`` is the backbone body's own state dict (for shapes).
    """
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        k = key
        for p in _WRAPPED_PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
                break
        if k.startswith(_CLASSIFIER_PREFIXES) or k.endswith(_RECOMPUTED_SUFFIXES):
            if k not in body_state or k.endswith(("attn_mask", "num_batches_tracked")):
                dropped.append(key)
                continue
            if k.endswith("relative_position_index") and body_state[k].shape != value.shape:
                dropped.append(key)  # other window size: keep the model's own index
                continue
        if k.endswith("relative_position_bias_table") and k in body_state:
            target = body_state[k].shape[0]
            if value.shape[0] != target:
                value = resize_relative_position_bias(value, (int(round(target**0.5)) + 1) // 2)
        out[k] = value
    return out, dropped


def load_imagenet_backbone(backbone: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load ImageNet weights into a :class:`vidseg.backbones.Backbone` (``backbone.body``).

    Accepts a torchvision ResNet file (``conv1.weight``, ``layer1.0.*``, ``fc.*`` dropped) or an original Swin
    file (``{"model": {...}}``, ``layers.*``, ``head.*`` dropped; bias tables interpolated to another
    window).
    Missing and unexpected keys are logged by name and returned.
    """
    obj = load_checkpoint_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: not an ImageNet state dict (expected tensors, optionally under 'model')"
        )
    body = backbone.body if hasattr(backbone, "body") else backbone
    body_state = body.state_dict()
    mapped, dropped = map_imagenet_state_dict(obj, body_state)
    mismatched = [k for k, v in mapped.items() if k in body_state and body_state[k].shape != v.shape]
    for k in mismatched:
        del mapped[k]
    result = body.load_state_dict(mapped, strict=False)
    fmt = "swin_imagenet" if any(k.startswith("layers.") for k in mapped) else "torchvision_resnet"
    report = LoadReport(
        missing=list(result.missing_keys),
        unexpected=list(result.unexpected_keys),
        converted_from=fmt,
        mismatched=mismatched,
        dropped=dropped,
    )
    if report.missing or report.unexpected or report.mismatched:
        logger.warning("ImageNet weights %s: %s", path, report.summary())
    else:
        logger.info("ImageNet weights %s: loaded %d tensors (%s)", path, len(mapped), fmt)
    if not mapped or len(report.missing) == len(body_state):
        raise CheckpointError(f"{path}: no tensor matched the backbone's names ({report.summary()})")
    return report
