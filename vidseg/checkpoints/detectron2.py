"""detectron2 model names (VITA, GenVIS, GRAtt-VIS, Mask2Former files) <-> vidseg model names.

Everything but the backbone already has the official names in vidseg (``sem_seg_head.*``, ``vita_module.*``).
The backbone is detectron2's ``backbone.stem.*`` / ``backbone.res{2..5}.*`` (ResNet) or ``backbone.*`` (Swin)
in the file, and a :class:`vidseg.backbones.Backbone` in vidseg (``backbone.body.conv1``, ``...layer1.*`` in
torchvision naming; Swin names unchanged under ``body.``). Old Mask2Former files call the content queries
``static_query``; the criteria's ``empty_weight`` buffers are recomputed, so they are dropped unless the
model holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from vidseg.checkpoints.imagenet import _d2_to_torchvision_key, _torchvision_to_d2_key, find_backbone_body

__all__ = ["detectron2_to_vidseg", "vidseg_to_detectron2", "RECOMPUTED"]

# Buffers of the official criteria (``criterion``, ``vita_criterion``, ``genvis_criterion``): [K+1] class
# weights that every criterion rebuilds from NO_OBJECT_WEIGHT.
RECOMPUTED = ("criterion.empty_weight", "_criterion.empty_weight")
_OLD_QUERY = "predictor.static_query."
_NEW_QUERY = "predictor.query_feat."


def _is_recomputed(k: str) -> bool:
    return k == RECOMPUTED[0] or k.endswith(RECOMPUTED[1])


def detectron2_to_vidseg(
    state_dict: Mapping[str, torch.Tensor], model_keys: Iterable[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Rename a detectron2 file's tensors to the keys of a vidseg model.

    Args:
        state_dict: the file's ``model`` entry (tensors).
        model_keys: the target model's ``state_dict()`` keys (where its backbone body lives and how it names
            it).
    Returns:
        ``(state_dict, {file key: new key} for renamed tensors, dropped file keys)``.
    """
    model_keys = set(model_keys)
    found = find_backbone_body(model_keys)
    out: dict[str, torch.Tensor] = {}
    renamed: dict[str, str] = {}
    dropped: list[str] = []
    for k, v in state_dict.items():
        if _is_recomputed(k) and k not in model_keys:
            dropped.append(k)
            continue
        new = k.replace(_OLD_QUERY, _NEW_QUERY) if _OLD_QUERY in k else k
        if k in model_keys:  # already the model's name (a file converted before): renaming is idempotent
            pass
        elif found is not None and k.startswith("backbone."):
            prefix, naming = found
            leaf = k[len("backbone.") :]
            if naming == "torchvision" and leaf.startswith(("stem.", "res")):
                new = prefix + _d2_to_torchvision_key(leaf)
            elif naming == "swin" and not leaf.startswith(("stem.", "res")):
                new = prefix + leaf
        if new != k:
            renamed[k] = new
        out[new] = v
    return out, renamed, dropped


def vidseg_to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official detectron2 names of a vidseg model's state dict (the inverse of
    :func:`detectron2_to_vidseg`), e.g. to compare with an official key list or to write an official-style
    file."""
    found = find_backbone_body(state_dict)
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        new = k
        if found is not None and k.startswith(found[0]):
            prefix, naming = found
            leaf = k[len(prefix) :]
            new = "backbone." + (_torchvision_to_d2_key(leaf) if naming == "torchvision" else leaf)
        out[new] = v
    return out
