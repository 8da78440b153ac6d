"""Builders of GRAtt-VIS: map the config (``MODEL.MASK_FORMER.*``, ``MODEL.SEM_SEG_HEAD.*``, ``MODEL.VITA.*``,
``MODEL.GENVIS.*``) to constructor kwargs. Nothing else in ``models/grattvis`` reads the config.

The detector is Mask2Former's builder's (``vidseg.models.mask2former.build``) with VITA's
``MODEL.VITA.LAST_LAYER_NUM`` as the number of decoder layers whose frame queries the head trains on.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from vidseg.models.bundle import ModelBundle, num_classes_from
from vidseg.models.grattvis.criterion import GRAttVISCriterion, grattvis_criterion
from vidseg.models.grattvis.joint_criterion import GRAttVISJointCriterion
from vidseg.models.grattvis.model import GRAttVIS
from vidseg.models.grattvis.vis_head import GRAttVISHead
from vidseg.models.mask2former.build import build_criterion, build_mask2former, build_param_groups

__all__ = [
    "build_grattvis",
    "build_grattvis_criterion",
    "build_grattvis_head",
    "build_grattvis_inference",
    "build_grattvis_model",
    "grattvis_num_classes",
    "resolve_use_mem",
]

logger = logging.getLogger(__name__)


def grattvis_num_classes(cfg: Any, metadata: Any = None) -> int:
    """K: ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``, or the dataset's class count when it is 0."""
    return num_classes_from(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, metadata, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")


def resolve_use_mem(cfg: Any, num_classes: int | None = None) -> bool:
    """``MODEL.GENVIS.USE_MEM``, unless ``MODEL.WEIGHTS`` says otherwise: a checkpoint with
    ``vita_module.pre_memory_embed_*`` keys has the memory, one without has none, and the file wins (the
    notes of :func:`vidseg.checkpoints.grattvis.grattvis_weights_plan` are logged)."""
    use_mem = bool(cfg.MODEL.GENVIS.USE_MEM)
    weights = str(cfg.MODEL.WEIGHTS or "")
    if not weights:
        return use_mem
    from vidseg.checkpoints.grattvis import grattvis_weights_plan

    use_mem, notes = grattvis_weights_plan(
        weights, use_mem, gated_prop=bool(cfg.MODEL.GENVIS.GATED_PROP), num_classes=num_classes
    )
    for note in notes:
        logger.warning(note)
    return bool(use_mem)


def _check(cfg: Any) -> None:
    """One-line errors for settings the head cannot build; warnings for keys it ignores."""
    v, f = cfg.MODEL.VITA, cfg.MODEL.MASK_FORMER
    if int(v.HIDDEN_DIM) != int(f.HIDDEN_DIM):
        raise ValueError(
            f"MODEL.VITA.HIDDEN_DIM {v.HIDDEN_DIM} must equal MODEL.MASK_FORMER.HIDDEN_DIM {f.HIDDEN_DIM} "
            "(the head reads the detector's frame queries)"
        )
    if bool(v.PRE_NORM):
        raise ValueError(
            "MODEL.VITA.PRE_NORM True: the GRAtt-VIS head is post-norm only (every official config)"
        )
    if float(v.DROPOUT) != 0.0:
        logger.warning(
            "MODEL.VITA.DROPOUT %s is ignored: the GRAtt-VIS head has no dropout (0 officially)", v.DROPOUT
        )


def build_grattvis_head(cfg: Any, num_classes: int, use_mem: bool | None = None) -> GRAttVISHead:
    """``vita_module`` from ``MODEL.VITA.*`` / ``MODEL.GENVIS.*`` (``use_mem``: :func:`resolve_use_mem` when
    None)."""
    _check(cfg)
    v, g, h = cfg.MODEL.VITA, cfg.MODEL.GENVIS, cfg.MODEL.SEM_SEG_HEAD
    return GRAttVISHead(
        num_classes,
        hidden_dim=int(v.HIDDEN_DIM),
        num_frame_queries=int(cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES),
        num_queries=int(v.NUM_OBJECT_QUERIES),
        nheads=int(v.NHEADS),
        dim_feedforward=int(v.DIM_FEEDFORWARD),
        enc_layers=int(v.ENC_LAYERS),
        dec_layers=int(v.DEC_LAYERS),
        enc_window_size=int(v.ENC_WINDOW_SIZE),
        enforce_input_proj=bool(v.ENFORCE_INPUT_PROJ),
        mask_dim=int(h.MASK_DIM),
        sim_embed=float(v.SIM_WEIGHT) > 0,
        gated_prop=bool(g.GATED_PROP),
        use_mem=resolve_use_mem(cfg, num_classes) if use_mem is None else bool(use_mem),
        window=int(g.LEN_CLIP_WINDOW),
        conv_dim=int(h.CONVS_DIM),
    )


def build_grattvis_model(cfg: Any, num_classes: int, use_mem: bool | None = None) -> GRAttVIS:
    """Detector (Mask2Former, keeping ``MODEL.VITA.LAST_LAYER_NUM`` frame-query layers) + head."""
    det_cfg = cfg.clone()
    det_cfg.defrost()
    det_cfg.MODEL.MASK_FORMER.NUM_FRAME_QUERY_LAYERS = int(cfg.MODEL.VITA.LAST_LAYER_NUM)
    head = build_grattvis_head(cfg, num_classes, use_mem)
    return GRAttVIS(
        build_mask2former(det_cfg, num_classes),
        head,
        freeze_detector=bool(cfg.MODEL.VITA.FREEZE_DETECTOR),
        deep_supervision=bool(cfg.MODEL.VITA.DEEP_SUPERVISION),
        pixel_mean=[float(x) for x in cfg.MODEL.PIXEL_MEAN],
        pixel_std=[float(x) for x in cfg.MODEL.PIXEL_STD],
        size_divisibility=int(cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY),
    )


def build_grattvis_criterion(cfg: Any, num_classes: int) -> GRAttVISCriterion | GRAttVISJointCriterion:
    """The video criterion: ``MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT`` (2 / 5 / 5), point sampling,
    ``MODEL.VITA.{SIM_WEIGHT, NO_OBJECT_WEIGHT, SIM_USE_CLIP}``, aux losses for the first ``DEC_LAYERS - 1``
    decoder layers with ``DEEP_SUPERVISION``, and ``MODEL.GENVIS.GATE_WEIGHT`` (only with ``GATED_PROP``).

    With ``MODEL.VITA.FREEZE_DETECTOR False`` it is joined by the per-frame Mask2Former criterion of the
    detector (``vidseg.models.mask2former.build.build_criterion``: ``MODEL.MASK_FORMER.*`` weights 2 / 5 / 5,
    ``NO_OBJECT_WEIGHT``, aux layers with ``MODEL.MASK_FORMER.DEEP_SUPERVISION``), as the official code does.
    """
    video = _video_criterion(cfg, num_classes)
    if bool(cfg.MODEL.VITA.FREEZE_DETECTOR):
        return video
    logger.info(
        "MODEL.VITA.FREEZE_DETECTOR False: the detector trains too, with its per-frame Mask2Former losses "
        "(loss_ce / loss_mask / loss_dice, MODEL.MASK_FORMER.*_WEIGHT) added to the GRAtt-VIS ones"
    )
    return GRAttVISJointCriterion(video, build_criterion(cfg, num_classes).criterion)


def _video_criterion(cfg: Any, num_classes: int) -> GRAttVISCriterion:
    f, v, g = cfg.MODEL.MASK_FORMER, cfg.MODEL.VITA, cfg.MODEL.GENVIS
    return grattvis_criterion(
        num_classes,
        class_weight=float(f.CLASS_WEIGHT),
        mask_weight=float(f.MASK_WEIGHT),
        dice_weight=float(f.DICE_WEIGHT),
        sim_weight=float(v.SIM_WEIGHT),
        gate_weight=float(g.GATE_WEIGHT) if g.GATED_PROP else 0.0,
        eos_coef=float(v.NO_OBJECT_WEIGHT),
        num_points=int(f.TRAIN_NUM_POINTS),
        oversample_ratio=float(f.OVERSAMPLE_RATIO),
        importance_sample_ratio=float(f.IMPORTANCE_SAMPLE_RATIO),
        num_aux=int(v.DEC_LAYERS) - 1 if v.DEEP_SUPERVISION else 0,
        sim_use_clip=bool(v.SIM_USE_CLIP),
    )


def build_grattvis_inference(cfg: Any, num_classes: int):
    """Online inference: ``TEST.DETECTIONS_PER_IMAGE`` tracks per video, test frames resized to
    ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``."""
    from vidseg.models.grattvis.inference import GRAttVISInference

    return GRAttVISInference(
        num_classes,
        top_k=int(cfg.TEST.DETECTIONS_PER_IMAGE),
        min_size_test=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size_test=int(cfg.INPUT.MAX_SIZE_TEST),
    )


def build_grattvis(cfg: Any, metadata: Any = None) -> ModelBundle:
    """Model, video criterion (+ the detector's per-frame losses when it trains), online inference and
    Mask2Former's optimizer groups (AdamW rule: backbone LR x ``SOLVER.BACKBONE_MULTIPLIER``,
    ``WEIGHT_DECAY_NORM`` on norms, ``WEIGHT_DECAY_EMBED`` on embeddings; frozen parameters, the whole
    detector by default, are left out).

    ``metadata``: the training dataset's metadata (its classes give K when
    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` is 0).
    """
    k = grattvis_num_classes(cfg, metadata)
    model: nn.Module = build_grattvis_model(cfg, k)
    return ModelBundle(
        model,
        build_grattvis_criterion(cfg, k),
        build_grattvis_inference(cfg, k),
        param_groups=build_param_groups(cfg),
    )
