"""``load_weights``: load any recognised checkpoint into a model by name, and write vidseg checkpoints."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidseg.checkpoints.devis_adapt import adapt_coco_to_devis
from vidseg.checkpoints.formats import (
    align_prefix,
    deformable_detr_to_devis,
    detect_format,
    extract_state_dict,
    reconcile_duplicated_bbox_embed,
    shift_class_neuron,
)
from vidseg.checkpoints.report import LoadReport
from vidseg.checkpoints.safe_load import CheckpointError, load_checkpoint_file

logger = logging.getLogger(__name__)


def read_checkpoint(
    path: str | os.PathLike, *, shift_class_neuron_: bool = False
) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Load a file and bring its state dict to vidseg/DeVIS names (no model needed).

    Returns ``(state_dict, format, metadata)``. Deformable DETR keys get the ``def_detr.`` prefix (and the
    class-neuron rotation when ``shift_class_neuron_``); the other formats already use vidseg names.
    """
    obj = load_checkpoint_file(path)
    sd, meta = extract_state_dict(obj, os.fspath(path))
    fmt = detect_format(sd, meta)
    if fmt == "deformable_detr":
        sd = deformable_detr_to_devis(sd, shift=shift_class_neuron_)
    elif shift_class_neuron_:
        sd = shift_class_neuron(sd)
    return sd, fmt, meta


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

    Handles vidseg checkpoints, official DeVIS video and COCO mask-head checkpoints and official Deformable
    DETR (+ iterative box refinement) checkpoints; the ``def_detr.`` prefix is added or stripped to fit the
    model, the duplicated ``transformer.decoder.bbox_embed.*`` keys are kept or dropped as the model expects,
    and COCO image weights given to a DeVIS video model (one with ``temporal_*`` parameters) are adapted with
    :func:`adapt_coco_to_devis` (options inferred from the model, overridable through ``devis_adapt``).

    Args:
        shift_class_neuron: rotate ``class_embed`` rows by one (official Deformable DETR files; DeVIS
            ``MODEL.SHIFT_CLASS_NEURON``).
        strict: raise ``RuntimeError`` naming the keys if anything is missing, unexpected or mis-shaped.

    Keys with a different shape are skipped (reported in ``mismatched``). Returns a :class:`LoadReport`;
    missing/unexpected keys are also logged as a warning.
    """
    sd, fmt, _ = read_checkpoint(path, shift_class_neuron_=shift_class_neuron)
    model_state = model.state_dict()
    sd = align_prefix(sd, model_state)
    converted = fmt
    model_is_video = any(".temporal_" in k for k in model_state)
    ckpt_is_video = any(".temporal_" in k or k.endswith("temporal_embed") for k in sd)
    if model_is_video and not ckpt_is_video and any(k.startswith("def_detr.") for k in sd):
        # The model may state its stage-2 options (DeVIS: heads, encoder window, SOLVER.DEVIS.FINETUNE_*).
        own = dict(getattr(model, "stage2_init", None) or {})
        kwargs = {**_infer_devis_adapt_kwargs(model_state), **own, **dict(devis_adapt or {})}
        sd = adapt_coco_to_devis(sd, **kwargs)
        converted += "+devis_stage2"
    sd, notes = reconcile_duplicated_bbox_embed(sd, model_state)
    mismatched = [k for k, v in sd.items() if k in model_state and model_state[k].shape != v.shape]
    for k in mismatched:
        notes.append(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(model_state[k].shape)}")
        del sd[k]
    result = model.load_state_dict(sd, strict=False)
    report = LoadReport(
        missing=list(result.missing_keys),
        unexpected=list(result.unexpected_keys),
        converted_from=converted,
        mismatched=mismatched,
        notes=notes,
    )
    if strict and not report.ok:
        raise RuntimeError(f"{path}: strict loading failed: {report.summary(max_names=50)}")
    if not report.ok:
        logger.warning("weights %s: %s", path, report.summary())
    else:
        logger.info("weights %s: loaded %d tensors (format %s)", path, len(sd), converted)
    return report


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    config: Any = None,
    overwrite: bool = False,
    **extra: Any,
) -> None:
    """Write ``{"model": state_dict, "config": config?, **extra}`` atomically in the zipfile format.

    ``config`` is the resolved vidseg config as a plain dict or YAML string (omitted when None).

    Everything stored must be tensors or plain Python values, so the file loads with ``weights_only=True``.
    Refuses to replace an existing file unless ``overwrite``.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (vidseg convert --overwrite) to replace it"
        )
    obj: dict[str, Any] = {"model": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    if config is not None:
        obj["config"] = config
    obj.update(extra)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=directory)
    os.close(fd)
    try:
        torch.save(obj, tmp)  # new zipfile serialization (the default)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
