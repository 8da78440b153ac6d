"""ImageNet weights for backbones from local files: torchvision ResNet, detectron2 ``.pkl`` and original Swin.

detectron2's ImageNet ResNets (``ImageNetPretrained/torchvision/R-50.pkl``, made by its
``convert-torchvision-to-d2`` tool) are the torchvision weights renamed: ``stem.conv1.*``,
``stem.conv1.norm.*``, ``res{2..5}.{b}.conv{1,2,3}[.norm].*``, ``res{s}.0.shortcut[.norm].*`` and
``stem.fc.*``, stored as numpy arrays.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.checkpoints.formats import extract_state_dict
from vidseg.checkpoints.report import LoadReport
from vidseg.checkpoints.safe_load import CheckpointError, safe_read

logger = logging.getLogger(__name__)

# Classification-only entries: the class head, Swin's final norm (detection uses norm0..3 instead) and buffers
# that are recomputed from the window size.
_CLASSIFIER_PREFIXES = ("fc.", "stem.fc.", "head.", "norm.")
_RECOMPUTED_SUFFIXES = ("num_batches_tracked", "attn_mask", "relative_position_index")
_WRAPPED_PREFIXES = ("def_detr.backbone.0.body.", "backbone.0.body.", "body.", "backbone.")


_D2_BLOCK = re.compile(r"^res(\d)\.(\d+)\.(conv[123]|shortcut)(\.norm)?\.(.+)$")
_TV_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(.+)$")


def _d2_to_torchvision_key(k: str) -> str:
    m = _D2_BLOCK.match(k)
    if k.startswith("stem.conv1.norm."):
        return "bn1." + k[len("stem.conv1.norm.") :]
    if k.startswith("stem."):  # stem.conv1.weight, and stem.fc.* (the converter prefixes non-layer keys)
        return k[len("stem.") :]
    if m is None:
        return k
    stage, block, conv, norm, leaf = m.groups()
    if conv == "shortcut":
        part = "downsample.1" if norm else "downsample.0"
    else:
        part = f"bn{conv[-1]}" if norm else conv
    return f"layer{int(stage) - 1}.{block}.{part}.{leaf}"


def _torchvision_to_d2_key(k: str) -> str:
    m = _TV_BLOCK.match(k)
    if k.startswith("bn1."):
        return "stem.conv1.norm." + k[len("bn1.") :]
    if k.startswith(("conv1.", "fc.")):
        return "stem." + k
    if m is None:
        return k
    layer, block, part, leaf = m.groups()
    part = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm"}.get(part, part)
    if part.startswith("bn"):
        part = f"conv{part[-1]}.norm"
    return f"res{int(layer) + 1}.{block}.{part}.{leaf}"


def detectron2_resnet_to_torchvision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """detectron2 ResNet names -> torchvision's (``res2.0.conv1.norm.weight`` -> ``layer1.0.bn1.weight``)."""
    return {_d2_to_torchvision_key(k): v for k, v in state_dict.items()}


def torchvision_resnet_to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet names -> detectron2's (the inverse of :func:`detectron2_resnet_to_torchvision`)."""
    return {_torchvision_to_d2_key(k): v for k, v in state_dict.items()}


def find_backbone_body(model_keys: Iterable[str]) -> tuple[str, str] | None:
    """``(prefix, naming)`` of the backbone body inside a model's state dict, or None.

    ``naming`` is ``"torchvision"`` (vidseg's ResNet: ``{prefix}conv1.weight``, ``{prefix}layer1.*``),
    ``"detectron2"`` (``{prefix}stem.conv1.weight``) or ``"swin"`` (``{prefix}patch_embed.proj.weight``).
    """
    keys = set(model_keys)
    for k in sorted(keys, key=len):
        for leaf, naming in (
            ("layer1.0.conv1.weight", "torchvision"),
            ("stem.conv1.weight", "detectron2"),
            ("patch_embed.proj.weight", "swin"),
        ):
            if k.endswith(leaf):
                prefix = k[: -len(leaf)]
                if naming != "torchvision" or prefix + "conv1.weight" in keys:
                    return prefix, naming
    return None


def normalise_imagenet_names(
    state_dict: Mapping[str, torch.Tensor], naming: str = "torchvision"
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, str]]:
    """An ImageNet file's tensors in a backbone body's ``naming``, without the classifier.

    Returns ``(state_dict, dropped file keys, {file key: new key} for the renamed ones)``. detectron2 names
    become torchvision's for a ``"torchvision"`` body and the other way round for a ``"detectron2"`` one;
    wrapper prefixes are removed; ``fc``/``head``/final ``norm`` and recomputed buffers are dropped.
    """
    if naming == "torchvision" and "stem.conv1.weight" in state_dict:
        rename = _d2_to_torchvision_key
    elif naming == "detectron2" and "conv1.weight" in state_dict:
        rename = _torchvision_to_d2_key
    else:
        rename = str
    origin = {_strip_wrapped(rename(k)): k for k in state_dict}
    mapped, dropped = map_imagenet_state_dict({rename(k): v for k, v in state_dict.items()}, {})
    dropped = [origin.get(_strip_wrapped(k), k) for k in dropped]
    renamed = {origin[k]: k for k in mapped if origin[k] != k}
    return mapped, dropped, renamed


def map_imagenet_into_model(
    state_dict: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor], source: str = "<file>"
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, str]]:
    """An ImageNet state dict (any of the three namings) -> keys of the backbone body inside ``model_state``.

    Returns ``(state_dict with the model's full names, dropped file keys, {file key: model key})``; raises
    :class:`CheckpointError` when the model has no recognisable backbone.
    """
    found = find_backbone_body(model_state)
    if found is None:
        raise CheckpointError(
            f"{source}: an ImageNet backbone file, but the model has no ResNet/Swin backbone"
        )
    prefix, naming = found
    sd, dropped, renamed = normalise_imagenet_names(state_dict, naming)
    origin = {new: old for old, new in renamed.items()}
    body_state = {k[len(prefix) :]: v for k, v in model_state.items() if k.startswith(prefix)}
    mapped, more = map_imagenet_state_dict(sd, body_state)  # Swin bias tables resized to the model's window
    dropped += [origin.get(k, k) for k in more]
    return {prefix + k: v for k, v in mapped.items()}, dropped, {origin.get(k, k): prefix + k for k in mapped}


def _strip_wrapped(k: str) -> str:
    for p in _WRAPPED_PREFIXES:
        if k.startswith(p):
            return k[len(p) :]
    return k


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
        k = _strip_wrapped(key)
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

    Accepts a torchvision ResNet file (``conv1.weight``, ``layer1.0.*``, ``fc.*`` dropped), a detectron2
    ImageNet ``.pkl`` (numpy arrays in detectron2 names, renamed to torchvision's) or an original Swin file
    (``{"model": {...}}``, ``layers.*``, ``head.*`` dropped; bias tables interpolated to another window).
    Missing and unexpected keys are logged by name and returned.
    """
    obj = safe_read(path)
    try:
        sd, _ = extract_state_dict(obj, os.fspath(path))
    except CheckpointError as e:
        raise CheckpointError(
            f"not an ImageNet state dict (expected tensors, optionally under 'model'): {e}"
        ) from None
    body = backbone.body if hasattr(backbone, "body") else backbone
    body_state = body.state_dict()
    if "stem.conv1.weight" in sd and "conv1.weight" in body_state:
        sd = detectron2_resnet_to_torchvision(sd)
    mapped, dropped = map_imagenet_state_dict(sd, body_state)
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
