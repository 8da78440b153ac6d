"""``load_weights``: load any recognised checkpoint into a model by name, and write vidseg checkpoints."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vidseg.checkpoints.detectron2 import detectron2_to_vidseg
from vidseg.checkpoints.devis_adapt import adapt_coco_to_devis
from vidseg.checkpoints.formats import (
    IMAGENET_FORMATS,
    align_prefix,
    deformable_detr_to_devis,
    detect_format,
    extract_state_dict,
    needs_class_shift,
    reconcile_duplicated_bbox_embed,
)
from vidseg.checkpoints.formats import shift_class_neuron as shift_class_neuron_rows
from vidseg.checkpoints.grattvis import grattvis_load_notes
from vidseg.checkpoints.imagenet import map_imagenet_into_model, normalise_imagenet_names
from vidseg.checkpoints.report import LoadReport
from vidseg.checkpoints.safe_load import CheckpointError, safe_read
from vidseg.checkpoints.safetensors_file import SUFFIX as SAFETENSORS_SUFFIX
from vidseg.checkpoints.safetensors_file import safetensors_bytes
from vidseg.utils.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)


@dataclass
class ConvertedCheckpoint:
    """A checkpoint file brought to vidseg names, before any model is involved.

    Attributes:
        state_dict: tensors under vidseg/DeVIS names (ImageNet files: backbone-body names, no classifier).
        format: the detected format (:func:`detect_format`).
        metadata: the file's other top-level entries (``optimizer``, ``cfg``, ...), configs as plain dicts.
        renamed: ``{file key: new key}`` for the tensors whose name changed.
        shifted: keys whose ``class_embed`` rows were rotated (``SHIFT_CLASS_NEURON``).
        dropped: file keys removed on purpose (ImageNet classifier, recomputed buffers).
        notes: remarks, e.g. why a requested shift was not applied.
    """

    state_dict: dict[str, torch.Tensor]
    format: str
    metadata: dict[str, Any]
    renamed: dict[str, str] = field(default_factory=dict)
    shifted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def imagenet(self) -> bool:
        """A backbone-only ImageNet file (or a vidseg file converted from one)."""
        return self.format in IMAGENET_FORMATS or self.metadata.get("converted_from") in IMAGENET_FORMATS


def convert_checkpoint(
    path: str | os.PathLike, *, shift_class_neuron: bool = False, video_model: bool = False
) -> ConvertedCheckpoint:
    """Read a file safely and bring its tensors to vidseg names (no model needed).

    Deformable DETR keys get the ``def_detr.`` prefix; detectron2 ImageNet names become torchvision's and the
    ImageNet classifier is dropped. ``shift_class_neuron`` (DeVIS ``MODEL.SHIFT_CLASS_NEURON``) rotates the
    ``class_embed`` rows only where the official code does: a file whose rows are still Deformable DETR's
    ``label = category_id`` (:func:`needs_class_shift`), loaded for an image model (``video_model`` False;
    DeVIS never shifts on its video path). Otherwise the shift is not applied and ``notes`` says why, so a
    DeVIS or vidseg file is never shifted twice.
    """
    path = os.fspath(path)
    sd, meta = extract_state_dict(safe_read(path), path)
    fmt = detect_format(sd, meta)
    out = ConvertedCheckpoint(sd, fmt, meta)
    if fmt == "deformable_detr":
        new = deformable_detr_to_devis(sd)
        out.renamed = {old: k for old, k in zip(sd, new) if old != k}
        out.state_dict = new
    elif fmt in IMAGENET_FORMATS:
        out.state_dict, out.dropped, out.renamed = normalise_imagenet_names(sd)
    if shift_class_neuron:
        if not needs_class_shift(fmt, meta):
            out.notes.append(
                f"SHIFT_CLASS_NEURON not applied: a {fmt} file already has label = category_id - 1 "
                "(the shift is for official Deformable DETR files only)"
            )
        elif video_model:
            out.notes.append(
                "SHIFT_CLASS_NEURON not applied: the model is a video model (DeVIS shifts the class rows "
                "only when Deformable DETR weights are loaded into the COCO image model)"
            )
        else:
            out.state_dict = shift_class_neuron_rows(out.state_dict)
            out.shifted = [k for k in out.state_dict if "class_embed" in k]
    return out


def read_weights(
    path: str | os.PathLike, *, shift_class_neuron_: bool = False
) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """``(state_dict, format, metadata)`` of :func:`convert_checkpoint` (an image model assumed)."""
    ck = convert_checkpoint(path, shift_class_neuron=shift_class_neuron_)
    return ck.state_dict, ck.format, ck.metadata


def _infer_devis_adapt_kwargs(model_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read T, T*Nq, K, L and the temporal point counts of a DeVIS video model from its parameter shapes."""
    try:
        t, _ = model_state["def_detr.backbone.1.temporal_embed"].shape
        q = model_state["def_detr.query_embed.weight"].shape[0]
        levels = model_state["def_detr.transformer.level_embed"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"cannot adapt COCO weights: the video model has no parameter {e}") from None
    n_heads = 8  # DeVIS: MODEL.TRANSFORMER.N_HEADS; the layouts below cannot tell heads from points
    kw: dict[str, Any] = dict(num_frames=t, num_queries=q, num_levels=levels, n_heads=n_heads)
    cls = model_state.get("def_detr.class_embed.0.weight")
    if cls is not None:
        kw["num_classes"] = cls.shape[0]
    for part, name in (("encoder", "enc"), ("decoder", "dec")):
        key = f"def_detr.transformer.{part}.layers.0.{'self' if part == 'encoder' else 'cross'}_attn"
        w = model_state.get(key + ".temporal_attention_weights.bias")
        if w is None:
            kw["finetune_temporal_modules"] = False
            continue
        frames = t - 1
        kw[f"{name}_points_temporal"] = w.shape[0] // (n_heads * frames * levels)
    return kw


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = False,
    shift_class_neuron: bool = False,
    devis_adapt: Mapping[str, Any] | None = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` by name, whatever its (recognised) format.

    Handles vidseg checkpoints, official DeVIS video and COCO mask-head checkpoints, official Deformable
    DETR (+ iterative box refinement) checkpoints, detectron2 files (VITA/GenVIS/GRAtt-VIS) and ImageNet
    backbone files (torchvision, detectron2 ``.pkl``, Swin; loaded into the model's backbone body). The
    ``def_detr.`` prefix is added or stripped to fit the model, the duplicated
    ``transformer.decoder.bbox_embed.*`` keys are kept or dropped as the model expects, and COCO image
    weights given to a DeVIS video model (one with ``temporal_*`` parameters) are adapted with
    :func:`adapt_coco_to_devis` (options inferred from the model, overridable through ``devis_adapt``).

    Args:
        shift_class_neuron: DeVIS ``MODEL.SHIFT_CLASS_NEURON``: rotate ``class_embed`` rows by one, applied
            only to an official Deformable DETR file loaded into an image model (see
            :func:`convert_checkpoint`); the report says whether it was applied.
        strict: raise ``RuntimeError`` naming the keys if anything is missing, unexpected or mis-shaped.

    Keys with a different shape are skipped (reported in ``mismatched``). Returns a :class:`LoadReport`
    (mapped, renamed, shifted, left out, missing); missing/unexpected keys are also logged as a warning.
    """
    model_state = model.state_dict()
    model_is_video = any(".temporal_" in k for k in model_state)
    ck = convert_checkpoint(path, shift_class_neuron=shift_class_neuron, video_model=model_is_video)
    origin = {new: old for old, new in ck.renamed.items()}  # current key -> file key
    dropped = list(ck.dropped)
    converted = ck.format
    if ck.imagenet:
        sd, more, renamed = map_imagenet_into_model(ck.state_dict, model_state, os.fspath(path))
        dropped += [origin.get(k, k) for k in more]
        origin = {new: origin.get(old, old) for old, new in renamed.items()}
        if ck.format == "vidseg":
            converted = f"vidseg ({ck.metadata['converted_from']})"
    else:
        before = list(ck.state_dict)
        sd = align_prefix(ck.state_dict, model_state)
        if len(sd) == len(before):  # align_prefix keeps the order (unless two names collapsed into one)
            origin = {new: origin.get(old, old) for old, new in zip(before, sd)}
        from_d2 = str(ck.metadata.get("converted_from", "")).startswith("detectron2")
        if ck.format == "detectron2" or from_d2:  # detectron2 backbone names -> the model's backbone body
            sd, d2_renamed, d2_dropped = detectron2_to_vidseg(sd, model_state)
            dropped += [origin.get(k, k) for k in d2_dropped]
            for old, new in d2_renamed.items():
                origin[new] = origin.pop(old, old)
        ckpt_is_video = any(".temporal_" in k or k.endswith("temporal_embed") for k in sd)
        if model_is_video and not ckpt_is_video and any(k.startswith("def_detr.") for k in sd):
            # The model may state its stage-2 options (DeVIS: heads, encoder window, SOLVER.DEVIS.FINETUNE_*).
            own = dict(getattr(model, "stage2_init", None) or {})
            kwargs = {**_infer_devis_adapt_kwargs(model_state), **own, **dict(devis_adapt or {})}
            sd = adapt_coco_to_devis(sd, **kwargs)
            converted += "+devis_stage2"
    sd, notes = reconcile_duplicated_bbox_embed(sd, model_state)
    notes = ck.notes + notes
    mismatched = [k for k, v in sd.items() if k in model_state and model_state[k].shape != v.shape]
    for k in mismatched:
        notes.append(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(model_state[k].shape)}")
        del sd[k]
    notes += grattvis_load_notes(model_state, sd)  # VITA / GenVIS files into GRAtt-VIS: what starts fresh
    result = model.load_state_dict(sd, strict=False)
    mapped = [k for k in sd if k in model_state]
    report = LoadReport(
        missing=list(result.missing_keys),
        unexpected=list(result.unexpected_keys),
        converted_from=converted,
        mismatched=mismatched,
        dropped=dropped,
        notes=notes,
        mapped=mapped,
        renamed={origin[k]: k for k in mapped if origin.get(k, k) != k},
        shifted=[k for k in mapped if "class_embed" in k] if ck.shifted else [],  # under the model's names
        not_weights=list(ck.metadata),
    )
    if report.shifted:
        logger.info(
            "MODEL.SHIFT_CLASS_NEURON: class_embed rows of %s rotated by one (%d tensors; official "
            "Deformable DETR file, label = category_id -> category_id - 1)",
            path,
            len(report.shifted),
        )
    for note in ck.notes:
        logger.info("weights %s: %s", path, note)
    if strict and not report.ok:
        raise RuntimeError(f"{path}: strict loading failed: {report.summary(max_names=50)}")
    if not report.ok:
        logger.warning("weights %s: %s", path, report.summary())
    else:
        logger.info("weights %s: %s", path, report.summary())
    return report


def weights_format(path: str | os.PathLike) -> str:
    """``"safetensors"`` for a ``*.safetensors`` name, else ``"pth"`` (a torch zipfile)."""
    return "safetensors" if os.fspath(path).endswith(SAFETENSORS_SUFFIX) else "pth"


def write_weights(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    config: Any = None,
    overwrite: bool = False,
    format: str | None = None,
    **extra: Any,
) -> None:
    """Write a vidseg weights file atomically: ``state_dict`` plus ``config`` (if given) and ``extra``.

    ``format`` ``"safetensors"`` writes the tensors with safetensors and every other entry as a JSON string
    in its metadata (:mod:`vidseg.checkpoints.safetensors_file`); ``"pth"`` writes ``{"model": state_dict,
    "config": config?, **extra}`` with torch's zipfile format. Default: from the name (``*.safetensors``, else
    pth). ``config`` is the resolved vidseg config as a plain dict or YAML string (omitted when None).

    Everything stored must be tensors or plain Python values, so either form loads without running code
    (the torch file with ``weights_only=True``). Refuses to replace an existing file unless ``overwrite``.
    """
    path = os.fspath(path)
    fmt = format or weights_format(path)
    if fmt not in ("safetensors", "pth"):
        raise ValueError(f"{path}: unknown weights format {fmt!r} (safetensors or pth)")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (vidseg convert --overwrite) to replace it"
        )
    entries: dict[str, Any] = {} if config is None else {"config": config}
    entries.update(extra)
    if fmt == "safetensors":
        atomic_write_bytes(path, safetensors_bytes(state_dict, entries, path), durable=True)
        return
    obj: dict[str, Any] = {"model": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    obj.update(entries)
    buf = io.BytesIO()
    torch.save(obj, buf)  # new zipfile serialization (the default)
    atomic_write_bytes(path, buf.getbuffer(), durable=True)
