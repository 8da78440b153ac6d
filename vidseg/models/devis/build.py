"""Builders of DeVIS: map the config to constructor kwargs. Nothing else in ``models/devis`` reads the config.

The image stage (``MODEL.META_ARCHITECTURE DeformableDETRSegm``) is Deformable DETR + the multi-scale mask
head, trained on COCO with per-image Hungarian matching. The video model (``DeVIS``) composes the temporal
attention into the same detector, adds the temporal position encoding and matches clips.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from vidseg.models.bundle import ModelBundle, num_classes_from
from vidseg.models.deformable_detr.build import build_deformable_detr
from vidseg.models.devis.clip_inference import ClipInference
from vidseg.models.devis.clip_matcher import ClipHungarianMatcher
from vidseg.models.devis.clip_targets import ClipCriterion
from vidseg.models.devis.criterion import build_weight_dict, focal_set_criterion
from vidseg.models.devis.image_stage import DeformableDETRSegm
from vidseg.models.devis.inference import ImageInference
from vidseg.models.devis.mask_head import MaskHeadConv, MultiScaleMHAttentionMap, mask_head_kwargs
from vidseg.models.devis.param_groups import deformable_detr_param_groups
from vidseg.models.devis.position import temporal_position
from vidseg.models.devis.postprocess import ImagePostProcessor
from vidseg.models.devis.targets import ImageCriterion
from vidseg.models.devis.temporal import decoder_attention, encoder_attention
from vidseg.models.devis.video_model import DeVIS, conv_head_3d
from vidseg.models.set_prediction.criterion import SetCriterion
from vidseg.models.set_prediction.matcher import HungarianMatcher

logger = logging.getLogger(__name__)

__all__ = [
    "build_image_stage",
    "build_deformable_detr_segm",
    "build_matcher",
    "build_clip_matcher",
    "build_criterion",
    "build_mask_head",
    "build_param_groups",
    "build_postprocessor",
    "build_devis",
    "build_devis_model",
    "build_temporal_attention",
]


def build_matcher(cfg: Any) -> HungarianMatcher:
    """``HungarianMatcher`` from ``MODEL.MATCHER.{CLASS_COST,BBX_L1_COST,BBX_GIOU_COST}`` and
    ``MODEL.LOSS.FOCAL_ALPHA``."""
    m = cfg.MODEL.MATCHER
    return HungarianMatcher(
        cost_class=float(m.CLASS_COST),
        cost_bbox=float(m.BBX_L1_COST),
        cost_giou=float(m.BBX_GIOU_COST),
        focal_alpha=float(cfg.MODEL.LOSS.FOCAL_ALPHA),
    )


def build_clip_matcher(cfg: Any) -> ClipHungarianMatcher:
    """``ClipHungarianMatcher`` from ``MODEL.DEVIS.NUM_FRAMES``, ``MODEL.MATCHER.*`` and
    ``MODEL.LOSS.FOCAL_ALPHA`` (``USE_SUM_L1_DISTANCE`` is optional: default False)."""
    m = cfg.MODEL.MATCHER
    return ClipHungarianMatcher(
        num_frames=int(cfg.MODEL.DEVIS.NUM_FRAMES),
        cost_class=float(m.CLASS_COST),
        cost_bbox=float(m.BBX_L1_COST),
        cost_giou=float(m.BBX_GIOU_COST),
        focal_alpha=float(cfg.MODEL.LOSS.FOCAL_ALPHA),
        use_l1_distance_sum=bool(m.get("USE_SUM_L1_DISTANCE", False)),
    )


def build_criterion(cfg: Any, num_classes: int, matcher: nn.Module | None = None) -> SetCriterion:
    """The DeVIS criterion from ``MODEL.LOSS.*``, ``MODEL.MASK_ON`` and ``MODEL.TRANSFORMER.DECODER_LAYERS``.

    ``num_classes`` comes from the dataset metadata; ``matcher`` defaults to :func:`build_matcher`.
    """
    loss = cfg.MODEL.LOSS
    if not loss.FOCAL_LOSS:
        raise ValueError(
            "MODEL.LOSS.FOCAL_LOSS False: only the sigmoid focal classification loss is implemented"
        )
    num_dec = int(cfg.MODEL.TRANSFORMER.DECODER_LAYERS)
    mask_on = bool(cfg.MODEL.MASK_ON)
    mask_aux = [int(i) for i in loss.MASK_AUX_LOSS] if mask_on else []
    bad = [i for i in mask_aux if not 0 <= i < num_dec - 1]
    if bad:
        raise ValueError(f"MODEL.LOSS.MASK_AUX_LOSS: layers {bad} outside the aux layers 0..{num_dec - 2}")
    weight_dict = build_weight_dict(
        class_coef=float(loss.CLASS_COEF),
        bbox_coef=float(loss.BBX_L1_COEF),
        giou_coef=float(loss.BBX_GIOU_COEF),
        mask_coef=float(loss.SEGM_MASK_COEF),
        dice_coef=float(loss.SEGM_DICE_COEF),
        num_decoder_layers=num_dec,
        aux_loss=bool(loss.AUX_LOSS),
        aux_loss_weighting=bool(loss.AUX_LOSS_WEIGHTING),
        mask_on=mask_on,
        mask_aux_layers=mask_aux,
    )
    return focal_set_criterion(
        num_classes,
        matcher if matcher is not None else build_matcher(cfg),
        weight_dict,
        losses=["labels", "boxes"] + (["masks"] if mask_on else []),
        focal_alpha=float(loss.FOCAL_ALPHA),
        mask_aux_layers=mask_aux,
        aux_loss=bool(loss.AUX_LOSS),
    )


def build_mask_head(
    cfg: Any, backbone_channels: Mapping[str, int]
) -> tuple[MultiScaleMHAttentionMap, MaskHeadConv]:
    """(``bbox_attention``, ``mask_head``) from ``MODEL.MASK_HEAD.*``, ``MODEL.HIDDEN_DIM`` and
    ``MODEL.TRANSFORMER.N_HEADS``; ``backbone_channels`` is the backbone's ``out_channels`` (``res2``..)."""
    att, head = mask_head_kwargs(
        used_features=[tuple(x) for x in cfg.MODEL.MASK_HEAD.USED_FEATURES],
        att_resolutions=list(cfg.MODEL.MASK_HEAD.UPSAMPLING_RESOLUTIONS),
        hidden_dim=int(cfg.MODEL.HIDDEN_DIM),
        backbone_channels=backbone_channels,
        use_mdc=bool(cfg.MODEL.MASK_HEAD.USE_MDC),
        num_heads=int(cfg.MODEL.TRANSFORMER.N_HEADS),
    )
    return MultiScaleMHAttentionMap(**att), MaskHeadConv(**head)


def build_deformable_detr_segm(
    cfg: Any, num_classes: int, matcher: nn.Module | None = None
) -> DeformableDETRSegm:
    """The image model (``MODEL.MASK_ON False`` gives a detection-only model without mask modules)."""
    def_detr = build_deformable_detr(cfg, num_classes)
    bbox_attention = mask_head = None
    if cfg.MODEL.MASK_ON:
        bbox_attention, mask_head = build_mask_head(cfg, def_detr.backbone.out_channels)
    return DeformableDETRSegm(
        def_detr,
        bbox_attention,
        mask_head,
        matcher if matcher is not None else build_matcher(cfg),
        mask_aux_loss=[int(i) for i in cfg.MODEL.LOSS.MASK_AUX_LOSS],
        att_resolutions=list(cfg.MODEL.MASK_HEAD.UPSAMPLING_RESOLUTIONS),
        used_features=[tuple(x) for x in cfg.MODEL.MASK_HEAD.USED_FEATURES],
        num_out=cfg.TEST.NUM_OUT,
    )


def build_param_groups(cfg: Any):
    """``fn(model) -> groups`` from ``SOLVER.{BASE_LR, LR_BACKBONE, *_NAMES, *_MULT, WEIGHT_DECAY}``, plus
    the video model's ``temporal_linear_proj`` group from ``SOLVER.DEVIS.LR_TEMPORAL_LINEAR_PROJ_*``."""
    s = cfg.SOLVER
    extra = []
    if "DEVIS" in s:
        extra.append(
            (
                "temporal_linear_proj",
                list(s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_NAMES),
                float(s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_MULT),
            )
        )

    def fn(model: nn.Module) -> list[dict]:
        return deformable_detr_param_groups(
            model,
            base_lr=float(s.BASE_LR),
            weight_decay=float(s.WEIGHT_DECAY),
            backbone_lr=float(s.LR_BACKBONE),
            backbone_names=list(s.BACKBONE_NAMES),
            linear_proj_names=list(s.LR_LINEAR_PROJ_NAMES),
            linear_proj_mult=float(s.LR_LINEAR_PROJ_MULT),
            mask_head_names=list(s.LR_MASK_HEAD_NAMES),
            mask_head_mult=float(s.LR_MASK_HEAD_MULT),
            extra=extra,
        )

    return fn


def build_postprocessor(cfg: Any) -> ImagePostProcessor:
    """``ImagePostProcessor`` from ``TEST.NUM_OUT``."""
    return ImagePostProcessor(num_out=int(cfg.TEST.NUM_OUT))


def build_image_stage(cfg: Any, metadata: Any = None) -> ModelBundle:
    """Model, criterion (taking ``ClipTargets``), image inference and DeVIS's parameter groups.

    ``metadata``: the training dataset's metadata (its classes give K when ``MODEL.NUM_CLASSES`` is 0).
    """
    k = num_classes_from(cfg.MODEL.NUM_CLASSES, metadata, "MODEL.NUM_CLASSES")
    matcher = build_matcher(cfg)
    model = build_deformable_detr_segm(cfg, k, matcher)
    criterion = ImageCriterion(build_criterion(cfg, k, matcher))
    inference = ImageInference(build_postprocessor(cfg))
    return ModelBundle(model, criterion, inference, param_groups=build_param_groups(cfg))


# ----------------------------------------------------------------------------------------------- video model
def build_temporal_attention(cfg: Any) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) attention of one layer from ``MODEL.DEVIS.DEFORMABLE_ATTENTION.*``,
    ``MODEL.TRANSFORMER.*`` and ``MODEL.DEVIS.NUM_FRAMES`` (see :mod:`vidseg.models.devis.temporal`)."""
    m = cfg.MODEL
    a = m.DEVIS.DEFORMABLE_ATTENTION
    common = dict(
        d_model=int(m.HIDDEN_DIM),
        n_levels=int(m.NUM_FEATURE_LEVELS),
        n_heads=int(m.TRANSFORMER.N_HEADS),
        num_frames=int(m.DEVIS.NUM_FRAMES),
        temporal_connections=not bool(a.DISABLE_TEMPORAL_CONNECTIONS),
        impl=m.DEFORM_ATTN_IMPL,
    )
    enc = encoder_attention(
        n_points=int(m.TRANSFORMER.ENC_N_POINTS),
        n_temporal_points=int(a.ENC_N_POINTS_TEMPORAL_FRAME),
        connect_all_frames=bool(a.ENC_CONNECT_ALL_FRAMES),
        temporal_window=int(a.ENC_TEMPORAL_WINDOW),
        **common,
    )
    dec = decoder_attention(
        n_points=int(m.TRANSFORMER.DEC_N_POINTS),
        n_temporal_points=int(a.DEC_N_POINTS_TEMPORAL_FRAME),
        instance_aware=bool(a.INSTANCE_AWARE_ATTENTION),
        **common,
    )
    return enc, dec


def _check_video_config(cfg: Any) -> None:
    """One-line errors for inconsistent clip settings; warnings for DeVIS data keys the pipeline does not
    implement (the run goes on with the pipeline's own behaviour)."""
    d = cfg.INPUT.DEVIS
    if not d.CREATE_BBX_FROM_MASK:
        logger.warning("INPUT.DEVIS.CREATE_BBX_FROM_MASK False: boxes always come from the augmented masks")
    if cfg.DATASETS.DEVIS.COCO_JOINT_TRAINING and not any(
        str(n).startswith("coco2") for n in cfg.DATASETS.TRAIN
    ):
        raise ValueError(
            "DATASETS.DEVIS.COCO_JOINT_TRAINING True: add the COCO pseudo-videos in the video label space to "
            "DATASETS.TRAIN, e.g. coco2ytvis2019_devis_train (DeVIS's category map) or coco2ytvis2019_train"
        )
    t = int(cfg.MODEL.DEVIS.NUM_FRAMES)
    if t < 2:
        raise ValueError(f"MODEL.DEVIS.NUM_FRAMES must be at least 2, got {t}")
    if int(cfg.INPUT.NUM_FRAMES) != t:
        raise ValueError(
            f"INPUT.NUM_FRAMES {cfg.INPUT.NUM_FRAMES} != MODEL.DEVIS.NUM_FRAMES {t}: "
            "training clips must have the model's length (set both)"
        )
    if int(cfg.MODEL.NUM_QUERIES) % t:
        raise ValueError(
            f"MODEL.NUM_QUERIES {cfg.MODEL.NUM_QUERIES} must be divisible by MODEL.DEVIS.NUM_FRAMES {t}"
        )


def build_devis_model(cfg: Any, num_classes: int, matcher: nn.Module | None = None) -> DeVIS:
    """The video model: the detector in clip mode with temporal attention and the temporal position
    encoding, the image stage's mask head (without ``out_lay`` plus ``conv_head_3d`` when
    ``MODEL.MASK_HEAD.DEVIS.CONV_HEAD_3D``)."""
    _check_video_config(cfg)
    m = cfg.MODEL
    if not m.MASK_ON:
        raise ValueError("MODEL.MASK_ON False: the DeVIS video model always has its mask head")
    t = int(m.DEVIS.NUM_FRAMES)
    enc, dec = build_temporal_attention(cfg)
    def_detr = build_deformable_detr(
        cfg,
        num_classes,
        encoder_attn=enc,
        decoder_attn=dec,
        position_embedding=temporal_position(m.DEVIS.TEMPORAL_EMBEDDING, int(m.HIDDEN_DIM), t),
        clip_queries=True,
    )
    bbox_attention, mask_head = build_mask_head(cfg, def_detr.backbone.out_channels)
    head_3d = None
    if m.MASK_HEAD.DEVIS.CONV_HEAD_3D:
        # The 3-d head replaces the 2-d head's out_lay: the 2-d head returns its C/16 channels per frame.
        att, kw = mask_head_kwargs(
            used_features=[tuple(x) for x in m.MASK_HEAD.USED_FEATURES],
            att_resolutions=list(m.MASK_HEAD.UPSAMPLING_RESOLUTIONS),
            hidden_dim=int(m.HIDDEN_DIM),
            backbone_channels=def_detr.backbone.out_channels,
            use_mdc=bool(m.MASK_HEAD.USE_MDC),
            num_heads=int(m.TRANSFORMER.N_HEADS),
        )
        mask_head = MaskHeadConv(**kw, out_layer=False)
        head_3d = conv_head_3d(int(m.HIDDEN_DIM) // 2 ** (len(kw["fpn_dims"]) + 1))
    return DeVIS(
        def_detr,
        bbox_attention,
        mask_head,
        matcher if matcher is not None else build_clip_matcher(cfg),
        num_frames=t,
        conv_head_3d=head_3d,
        mask_aux_loss=[int(i) for i in m.LOSS.MASK_AUX_LOSS],
        att_resolutions=list(m.MASK_HEAD.UPSAMPLING_RESOLUTIONS),
        used_features=[tuple(x) for x in m.MASK_HEAD.USED_FEATURES],
        num_out=int(cfg.TEST.NUM_OUT),
        stage2_init=_stage2_init(cfg, num_classes, enc, dec),
    )


def _stage2_init(cfg: Any, num_classes: int, enc: nn.Module, dec: nn.Module) -> dict:
    """Keyword arguments of ``adapt_coco_to_devis`` for this model (``SOLVER.DEVIS.FINETUNE_*``)."""
    m, s = cfg.MODEL, cfg.SOLVER.DEVIS
    temporal = hasattr(enc, "n_temporal_frames") or hasattr(dec, "n_temporal_frames")
    return dict(
        num_frames=int(m.DEVIS.NUM_FRAMES),
        num_queries=int(m.NUM_QUERIES),
        num_classes=num_classes,
        num_levels=int(m.NUM_FEATURE_LEVELS),
        n_heads=int(m.TRANSFORMER.N_HEADS),
        enc_temporal_frames=getattr(enc, "n_temporal_frames", int(m.DEVIS.NUM_FRAMES) - 1),
        enc_points_temporal=getattr(enc, "n_temporal_points", 0),
        dec_points_temporal=getattr(dec, "n_temporal_points", 0),
        finetune_temporal_modules=bool(s.FINETUNE_TEMPORAL_MODULES) and temporal,
        finetune_query_embeds=bool(s.FINETUNE_QUERY_EMBEDDINGS),
        finetune_class_logits=bool(s.FINETUNE_CLASS_LOGITS),
    )


def build_devis(cfg: Any, metadata: Any = None) -> ModelBundle:
    """The DeVIS video model's ``ModelBundle``: model, clip criterion (taking ``ClipTargets``), per-clip
    inference and the parameter groups (with the temporal offsets at ``LR_TEMPORAL_LINEAR_PROJ_MULT``)."""
    k = num_classes_from(cfg.MODEL.NUM_CLASSES, metadata, "MODEL.NUM_CLASSES")
    matcher = build_clip_matcher(cfg)
    model = build_devis_model(cfg, k, matcher)
    criterion = ClipCriterion(build_criterion(cfg, k, matcher))
    inference = build_clip_inference(cfg)
    return ModelBundle(model, criterion, inference, param_groups=build_param_groups(cfg))


def clip_tracker_kwargs(cfg: Any) -> dict[str, Any]:
    """``TEST.CLIP_TRACKING.*`` -> the :class:`~vidseg.models.devis.tracker.ClipTracker` keyword arguments."""
    c = cfg.TEST.CLIP_TRACKING
    return {
        "mask_cost": float(c.MASK_COST),
        "class_cost": float(c.CLASS_COST),
        "score_cost": float(c.SCORE_COST),
        "center_cost": float(c.CENTER_COST),
        "per_class_matching": bool(c.PER_CLASS_MATCHING),
        "binary_mask_iou": bool(c.USE_BINARY_MASK_IOU),
        "frame_average_iou": bool(c.USE_FRAME_AVERAGE_IOU),
        "final_class_policy": str(c.FINAL_CLASS_POLICY),
        "final_score_policy": str(c.FINAL_SCORE_POLICY),
        "min_frame_score": float(c.MIN_FRAME_SCORE),
        "min_detections": int(c.MIN_DETECTIONS),
        "min_track_score": float(c.MIN_TRACK_SCORE),
    }


def build_clip_inference(cfg: Any) -> ClipInference:
    """Near-online inference with the multi-cue clip tracker, from ``MODEL.DEVIS.NUM_FRAMES`` and
    ``TEST.CLIP_TRACKING.*``."""
    t = int(cfg.MODEL.DEVIS.NUM_FRAMES)
    stride = int(cfg.TEST.CLIP_TRACKING.STRIDE)
    if not 0 < stride <= t:
        raise ValueError(
            f"TEST.CLIP_TRACKING.STRIDE: {stride} must be in 1..{t} (MODEL.DEVIS.NUM_FRAMES, the clip length)"
        )
    c = cfg.TEST.CLIP_TRACKING
    if str(c.FINAL_CLASS_POLICY) not in ("most_common", "score_weighting"):
        raise ValueError(
            "TEST.CLIP_TRACKING.FINAL_CLASS_POLICY: "
            f"{c.FINAL_CLASS_POLICY!r} is not most_common or score_weighting"
        )
    if str(c.FINAL_SCORE_POLICY) not in ("mean", "median"):
        raise ValueError(
            f"TEST.CLIP_TRACKING.FINAL_SCORE_POLICY: {c.FINAL_SCORE_POLICY!r} is not mean|median"
        )
    # The official VIS test set feeds each clip unpadded (devis.md §4, §12): no INPUT.SIZE_DIVISIBILITY here.
    return ClipInference(t, 1, stride, clip_tracker_kwargs(cfg))
