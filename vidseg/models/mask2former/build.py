"""Builders of Mask2Former: map the config to constructor kwargs. Nothing else in ``models/mask2former`` reads
the config."""

from __future__ import annotations

from typing import Any

from torch import nn

from vidseg.backbones import build_backbone, freeze_stages
from vidseg.backbones.swin import SWIN_SPECS
from vidseg.models.bundle import ModelBundle, num_classes_from
from vidseg.models.mask2former.criterion import FrameCriterion, mask2former_criterion, mask2former_weight_dict
from vidseg.models.mask2former.inference import FrameInference, InstancePostProcessor
from vidseg.models.mask2former.matcher import MaskHungarianMatcher
from vidseg.models.mask2former.model import Mask2Former, MaskFormerHead
from vidseg.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from vidseg.models.mask2former.transformer_decoder import MaskedTransformerDecoder

__all__ = [
    "backbone_name",
    "build_mask2former_backbone",
    "build_pixel_decoder",
    "build_transformer_decoder",
    "build_mask2former",
    "build_matcher",
    "build_criterion",
    "build_param_groups",
    "build_mask2former_bundle",
]

_NORM_TYPES = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.SyncBatchNorm)
# Parameters that are embeddings without being an ``nn.Embedding`` (Swin's tables). The pixel decoder's bare
# ``level_embed`` parameter is not among them: the official optimizer decays it like any weight.
_EMBED_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def backbone_name(cfg: Any) -> str:
    """The vidseg backbone of ``MODEL.BACKBONE.NAME`` + ``MODEL.RESNETS.DEPTH`` / ``MODEL.SWIN.*``."""
    m = cfg.MODEL
    name = m.BACKBONE.NAME
    if name == "build_resnet_backbone":
        depth = int(m.RESNETS.DEPTH)
        if m.RESNETS.STRIDE_IN_1X1 or int(m.RESNETS.RES5_DILATION) != 1:
            raise ValueError("MODEL.RESNETS: only STRIDE_IN_1X1 False and RES5_DILATION 1 are implemented")
        if depth not in (18, 34, 50, 101):
            raise ValueError(f"MODEL.RESNETS.DEPTH: {depth} is not one of 18, 34, 50, 101")
        return f"resnet{depth}"
    if name == "D2SwinTransformer":
        s = m.SWIN
        want = (int(s.EMBED_DIM), tuple(s.DEPTHS), tuple(s.NUM_HEADS), int(s.WINDOW_SIZE))
        for n, spec in SWIN_SPECS.items():
            if (
                spec["embed_dim"],
                tuple(spec["depths"]),
                tuple(spec["num_heads"]),
                spec["window_size"],
            ) == want:
                return n
        raise ValueError(
            f"MODEL.SWIN: no Swin variant with (EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE) {want}"
        )
    raise ValueError(f"MODEL.BACKBONE.NAME: {name!r} (build_resnet_backbone or D2SwinTransformer)")


def build_mask2former_backbone(cfg: Any) -> nn.Module:
    """The backbone (ImageNet weights from ``MODEL.BACKBONE.PRETRAINED`` when set)."""
    m = cfg.MODEL
    name = backbone_name(cfg)
    feats = list(m.RESNETS.OUT_FEATURES if name.startswith("resnet") else m.SWIN.OUT_FEATURES)
    backbone = build_backbone(name, train_backbone=True, pretrained=m.BACKBONE.PRETRAINED, out_features=feats)
    freeze_stages(backbone, int(m.BACKBONE.FREEZE_AT))
    return backbone


def build_pixel_decoder(cfg: Any, backbone: nn.Module) -> MSDeformAttnPixelDecoder:
    """``MSDeformAttnPixelDecoder`` from ``MODEL.SEM_SEG_HEAD.*`` and the backbone's channels/strides."""
    h = cfg.MODEL.SEM_SEG_HEAD
    if h.PIXEL_DECODER_NAME != "MSDeformAttnPixelDecoder":
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME: only MSDeformAttnPixelDecoder ({h.PIXEL_DECODER_NAME!r})"
        )
    feats = [f for f in h.IN_FEATURES]
    missing = [f for f in feats if f not in backbone.out_channels]
    if missing:
        raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES: the backbone gives no {missing}")
    return MSDeformAttnPixelDecoder(
        {f: backbone.out_channels[f] for f in feats},
        transformer_in_features=list(h.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
        conv_dim=int(h.CONVS_DIM),
        mask_dim=int(h.MASK_DIM),
        norm=str(h.NORM),
        num_layers=int(h.TRANSFORMER_ENC_LAYERS),
        d_ffn=int(h.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD),
        # The official MSDeformAttnPixelDecoder.from_config takes its heads from MODEL.MASK_FORMER.NHEADS and
        # never reads SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS (a dead key, kept so configs load).
        n_heads=int(cfg.MODEL.MASK_FORMER.NHEADS),
        n_points=int(h.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS),
        dropout=float(cfg.MODEL.MASK_FORMER.DROPOUT),
        common_stride=int(h.COMMON_STRIDE),
        strides={f: backbone.strides[f] for f in feats},
        impl=str(cfg.MODEL.DEFORM_ATTN_IMPL),
        force_fp32=bool(h.PIXEL_DECODER_FP32),
    )


def build_transformer_decoder(cfg: Any, num_classes: int) -> MaskedTransformerDecoder:
    """``MaskedTransformerDecoder`` from ``MODEL.MASK_FORMER.*``."""
    f = cfg.MODEL.MASK_FORMER
    return MaskedTransformerDecoder(
        in_channels=int(cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM),
        num_classes=num_classes,
        hidden_dim=int(f.HIDDEN_DIM),
        num_queries=int(f.NUM_OBJECT_QUERIES),
        nheads=int(f.NHEADS),
        dim_feedforward=int(f.DIM_FEEDFORWARD),
        dec_layers=int(f.DEC_LAYERS),
        mask_dim=int(cfg.MODEL.SEM_SEG_HEAD.MASK_DIM),
        dropout=float(f.DROPOUT),
        num_feature_levels=len(cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
        enforce_input_proj=bool(f.ENFORCE_INPUT_PROJ),
        num_frame_query_layers=int(f.NUM_FRAME_QUERY_LAYERS),
        pre_norm=bool(f.PRE_NORM),
    )


def build_mask2former(cfg: Any, num_classes: int) -> Mask2Former:
    backbone = build_mask2former_backbone(cfg)
    head = MaskFormerHead(build_pixel_decoder(cfg, backbone), build_transformer_decoder(cfg, num_classes))
    return Mask2Former(backbone, head)


def build_matcher(cfg: Any) -> MaskHungarianMatcher:
    """``MaskHungarianMatcher`` from ``MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT`` and
    ``TRAIN_NUM_POINTS``."""
    f = cfg.MODEL.MASK_FORMER
    return MaskHungarianMatcher(
        cost_class=float(f.CLASS_WEIGHT),
        cost_mask=float(f.MASK_WEIGHT),
        cost_dice=float(f.DICE_WEIGHT),
        num_points=int(f.TRAIN_NUM_POINTS),
    )


def build_criterion(cfg: Any, num_classes: int) -> FrameCriterion:
    """The per-frame criterion (taking clip targets) from ``MODEL.MASK_FORMER.*``."""
    f = cfg.MODEL.MASK_FORMER
    num_aux = int(f.DEC_LAYERS) - 1 if f.DEEP_SUPERVISION else 0
    weights = mask2former_weight_dict(
        float(f.CLASS_WEIGHT), float(f.MASK_WEIGHT), float(f.DICE_WEIGHT), num_aux
    )
    criterion = mask2former_criterion(
        num_classes,
        build_matcher(cfg),
        weights,
        eos_coef=float(f.NO_OBJECT_WEIGHT),
        num_points=int(f.TRAIN_NUM_POINTS),
        oversample_ratio=float(f.OVERSAMPLE_RATIO),
        importance_sample_ratio=float(f.IMPORTANCE_SAMPLE_RATIO),
    )
    if not f.DEEP_SUPERVISION:
        criterion.aux_losses = lambda i: ()
    return FrameCriterion(criterion)


def build_param_groups(cfg: Any):
    """``fn(model) -> groups``: Mask2Former's optimizer rule (``SOLVER.BASE_LR``, ``WEIGHT_DECAY``,
    ``BACKBONE_MULTIPLIER`` on the backbone, ``WEIGHT_DECAY_NORM`` on norms, ``WEIGHT_DECAY_EMBED`` on
    embeddings and Swin's position tables)."""
    s = cfg.SOLVER
    lr, wd = float(s.BASE_LR), float(s.WEIGHT_DECAY)
    mult, wd_norm, wd_embed = (
        float(s.BACKBONE_MULTIPLIER),
        float(s.WEIGHT_DECAY_NORM),
        float(s.WEIGHT_DECAY_EMBED),
    )

    def fn(model: nn.Module) -> list[dict]:
        groups: dict[tuple, dict] = {}
        for mod_name, module in model.named_modules():
            for p_name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                backbone = full.startswith("backbone.")
                if isinstance(module, _NORM_TYPES):
                    kind, decay = "norm", wd_norm
                elif isinstance(module, nn.Embedding) or p_name in _EMBED_NAMES:
                    kind, decay = "embed", wd_embed
                else:
                    kind, decay = "", wd
                key = (backbone, kind)
                if key not in groups:
                    name = "_".join(x for x in ("backbone" if backbone else "head", kind) if x)
                    groups[key] = {
                        "params": [],
                        "lr": lr * (mult if backbone else 1.0),
                        "weight_decay": decay,
                        "name": name,
                    }
                groups[key]["params"].append(p)
        return list(groups.values())

    return fn


def build_mask2former_bundle(cfg: Any, metadata: Any = None) -> ModelBundle:
    """Model, per-frame criterion, per-frame inference and Mask2Former's parameter groups.

    ``metadata``: the training dataset's metadata (its classes give K when ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
    is 0).
    """
    k = num_classes_from(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, metadata, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    model = build_mask2former(cfg, k)
    inference = FrameInference(InstancePostProcessor(int(cfg.TEST.DETECTIONS_PER_IMAGE)))
    return ModelBundle(model, build_criterion(cfg, k), inference, param_groups=build_param_groups(cfg))
