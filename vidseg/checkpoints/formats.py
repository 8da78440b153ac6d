"""Recognising checkpoint formats by their keys, and the name maps of the official releases.

Formats (``detect_format``):
    ``vidseg``            ``{"model": state_dict, "config"|"converted_from": ...}`` written by vidseg.
    ``devis_video``       official DeVIS video checkpoint: ``def_detr.*`` keys with ``temporal_*`` modules.
    ``devis_maskhead``    official DeVIS COCO "Deformable Mask-Head": ``def_detr.*``, no temporal keys.
    ``deformable_detr``   official Deformable DETR (+ iterative box refinement): ``backbone.0.body.*``,
                          ``transformer.*``, ``class_embed.*``, ``bbox_embed.*``, ``query_embed.*``.
    ``detectron2``        a detectron2 training file (VITA, GenVIS, GRAtt-VIS, Mask2Former):
                          ``backbone.stem.*``, ``backbone.res*``, ``sem_seg_head.*``, ``vita_module.*``, ...
    ``detectron2_imagenet``  detectron2 ImageNet ``.pkl`` (``{"model": numpy arrays, "__author__": ...}``,
                          ``stem.conv1.*``, ``res2.0.*``).
    ``torchvision_resnet``   torchvision ImageNet ResNet (``conv1.weight``, ``layer1.0.*``, ``fc.*``).
    ``swin_imagenet``     original Swin ImageNet file (``patch_embed.*``, ``layers.*``, ``head.*``), also as
                          Mask2Former's ``.pkl`` (``convert-pretrained-swin-model-to-d2.py``: same names,
                          plain-pickled tensors, ``__author__: third_party``).
    ``state_dict``        anything else: a plain state dict loaded by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from vidseg.checkpoints.safe_load import CheckpointError

FORMATS = (
    "vidseg",
    "devis_video",
    "devis_maskhead",
    "deformable_detr",
    "detectron2",
    "detectron2_imagenet",
    "torchvision_resnet",
    "swin_imagenet",
    "state_dict",
)
# Backbone-only ImageNet files: loaded into the model's backbone body, not by name at the top level.
IMAGENET_FORMATS = ("detectron2_imagenet", "torchvision_resnet", "swin_imagenet")
DETECTRON2_TOP = ("backbone.stem.", "backbone.res2.", "sem_seg_head.", "vita_module.", "genvis_module.")
DEFORMABLE_DETR_TOP = (
    "backbone.",
    "transformer.",
    "class_embed.",
    "bbox_embed.",
    "query_embed.",
    "input_proj.",
)
DECODER_BBOX_PREFIX = "transformer.decoder.bbox_embed."


def extract_state_dict(
    obj: Any, source: str = "<checkpoint>"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a loaded checkpoint into ``(state_dict, metadata)``.

    Accepts ``{"model": sd, ...}``, ``{"state_dict": sd, ...}`` or a bare state dict. A ``module.`` prefix
    (DistributedDataParallel) is removed, and numpy arrays (detectron2 ``.pkl`` files) become tensors, as
    detectron2's checkpointer does. ``metadata`` holds the other top-level entries.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict at the top level, got {type(obj).__name__}")
    if "blobs" in obj and "model" not in obj:
        raise CheckpointError(
            f"{source}: a Caffe2/Detectron 'blobs' file (MSRA naming, e.g. res2_0_branch2a_w) is not "
            "supported; use the torchvision-converted detectron2 file "
            "(ImageNetPretrained/torchvision/R-50.pkl) or a torchvision .pth"
        )
    for key in ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            sd, meta = obj[key], {k: v for k, v in obj.items() if k != key}
            break
    else:
        sd, meta = obj, {}
    if any(isinstance(v, np.ndarray) for v in sd.values()):
        sd = {
            k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in sd.items()
        }
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not sd or bad:
        where = "empty state dict" if not sd else f"non-tensor entries {bad[:5]}"
        raise CheckpointError(f"{source}: field 'model' is not a state dict ({where})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd), meta


def detect_format(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> str:
    """Name of the checkpoint format (one of :data:`FORMATS`), from its keys and top-level metadata."""
    metadata = metadata or {}
    if "config" in metadata or "converted_from" in metadata:
        return "vidseg"
    keys = list(state_dict)
    if any(k.startswith("def_detr.") for k in keys):
        temporal = any(".temporal_" in k or k.endswith("temporal_embed") for k in keys)
        return "devis_video" if temporal else "devis_maskhead"
    if any(k.startswith("backbone.0.body.") for k in keys) and any(
        k.startswith("transformer.") for k in keys
    ):
        if any(k.startswith("class_embed.") for k in keys):
            return "deformable_detr"
    if any(k.startswith(DETECTRON2_TOP) for k in keys):
        return "detectron2"
    # Before the ``__author__`` rule: Mask2Former's Swin .pkl files carry ``__author__`` with original names.
    if "patch_embed.proj.weight" in state_dict and any(k.startswith("layers.") for k in keys):
        return "swin_imagenet"
    if "__author__" in metadata or (
        "stem.conv1.weight" in state_dict and any(k.startswith("res2.") for k in keys)
    ):
        return "detectron2_imagenet"
    if "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in keys):
        return "torchvision_resnet"
    return "state_dict"


def needs_class_shift(fmt: str, metadata: Mapping[str, Any] | None = None) -> bool:
    """Whether ``SHIFT_CLASS_NEURON`` applies: class rows still in Deformable DETR's ``label = category_id``.

    True for an official Deformable DETR file, and for a vidseg file converted from one without the shift
    (``vidseg convert`` records ``class_neuron_shifted``). DeVIS, vidseg and detectron2 files already use
    ``label = category_id - 1``: shifting them would move every class by one more.
    """
    if fmt == "deformable_detr":
        return True
    metadata = metadata or {}
    source = str(metadata.get("converted_from", ""))
    return (
        fmt == "vidseg" and source.startswith("deformable_detr") and not metadata.get("class_neuron_shifted")
    )


def shift_class_neuron(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rotate every ``class_embed`` weight/bias by one row: ``new[i] = old[i + 1]``, ``new[-1] = old[0]``.

    Official Deformable DETR trains COCO with ``label = category_id`` (91 outputs, neuron 0 never a target);
    vidseg/DeVIS use ``label = category_id - 1``. Moving neuron 0 to the end maps category ``c`` to neuron
    ``c - 1`` (DeVIS ``MODEL.SHIFT_CLASS_NEURON``, ``shift_class_neurons`` in weights_loading_utils).
    """
    out = {}
    for k, v in state_dict.items():
        if "class_embed" in k:
            v = torch.cat([v[1:], v[:1]], dim=0)
        out[k] = v
    return out


def add_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str, skip: Iterable[str] = ()) -> dict:
    """Prefix every key except those starting with one of ``skip``."""
    skip = tuple(skip)
    return {(k if skip and k.startswith(skip) else prefix + k): v for k, v in state_dict.items()}


def deformable_detr_to_devis(state_dict: Mapping[str, torch.Tensor], shift: bool = False) -> dict:
    """Official Deformable DETR keys -> DeVIS/vidseg image-model keys (``def_detr.`` prefix).

    ``bbox_attention.*`` / ``mask_head.*`` (not present in D-DETR files) keep their names.
    """
    sd = shift_class_neuron(state_dict) if shift else dict(state_dict)
    return add_prefix(sd, "def_detr.", skip=("def_detr.", "bbox_attention.", "mask_head."))


def align_prefix(
    state_dict: Mapping[str, torch.Tensor], model_keys: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Add or strip a ``def_detr.`` prefix so the keys match a model that is (or is not) wrapped.

    Loading an image-model checkpoint into a bare ``DeformableDETR`` strips ``def_detr.``; loading a bare one
    into ``DeformableDETRSegm``/DeVIS adds it. Picks whichever variant matches the most model keys.
    """
    model_keys = set(model_keys)
    candidates = [dict(state_dict)]
    candidates.append(
        {(k[len("def_detr.") :] if k.startswith("def_detr.") else k): v for k, v in state_dict.items()}
    )
    candidates.append(
        add_prefix(state_dict, "def_detr.", skip=("def_detr.", "bbox_attention.", "mask_head."))
    )
    return max(candidates, key=lambda sd: len(model_keys.intersection(sd)))


def reconcile_duplicated_bbox_embed(
    state_dict: Mapping[str, torch.Tensor], model_keys: Iterable[str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Handle the two copies of the box heads (``[def_detr.]bbox_embed.*`` and its ``transformer.decoder``
    alias, the same tensors in the official models).

    Keeps whichever copy the model expects: fills a missing copy from the other, drops a copy the model does
    not have. Returns ``(state_dict, notes)``; ``notes`` name copies that disagreed (the head copy wins).
    """
    model_keys = set(model_keys)
    sd = dict(state_dict)
    notes: list[str] = []
    differing: list[str] = []
    for prefix in ("def_detr.", ""):
        head, dec = prefix + "bbox_embed.", prefix + DECODER_BBOX_PREFIX
        for k in [k for k in sd if k.startswith(head)] + [k for k in sd if k.startswith(dec)]:
            if k not in sd:
                continue
            other = dec + k[len(head) :] if k.startswith(head) else head + k[len(dec) :]
            if other in sd and k.startswith(head) and not torch.equal(sd[k], sd[other]):
                differing.append(other)
                sd[other] = sd[k]
            if other not in sd and other in model_keys:
                sd[other] = sd[k]
        for k in [k for k in sd if k.startswith(dec) and k not in model_keys]:
            if head + k[len(dec) :] in sd:
                del sd[k]  # an alias the model does not register: not "unexpected"
    if differing:
        notes.append(
            f"{len(differing)} decoder box-head copies differ from the head copies (e.g. {differing[0]}); "
            "the head copies were used for both"
        )
    return sd, notes
