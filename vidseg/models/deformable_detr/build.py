"""``build_deformable_detr(cfg, num_classes)``: the detector from ``MODEL.*`` (config -> constructor kwargs).

Nothing below reads the config except this builder; modules receive plain arguments. Methods that contain the
detector (the DeVIS image stage) call it from their own ``build``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vidseg.backbones import build_backbone
from vidseg.layers import PositionEmbeddingSine
from vidseg.models.deformable_detr.detr import DeformableDETR, Joiner
from vidseg.models.deformable_detr.transformer import DeformableTransformer

__all__ = ["build_deformable_detr"]


def build_deformable_detr(
    cfg: Any,
    num_classes: int,
    encoder_attn: nn.Module | None = None,
    decoder_attn: nn.Module | None = None,
    position_embedding: nn.Module | None = None,
    clip_queries: bool = False,
) -> DeformableDETR:
    """Backbone joiner + transformer + heads from ``MODEL.*``.

    ``encoder_attn`` / ``decoder_attn``: attention modules composed into every encoder / decoder layer
    (default: the spatial ``MSDeformAttn`` of the config's sizes). ``position_embedding``: the joiner's
    ``backbone.1`` (default: the 2-d sine encoding). ``clip_queries``: DeVIS video mode (see
    :class:`DeformableTransformer`).
    """
    m = cfg.MODEL
    if not m.WITH_BBX_REFINE and m.BBX_GRADIENT_PROP:
        raise ValueError("MODEL.BBX_GRADIENT_PROP True needs MODEL.WITH_BBX_REFINE True")
    if m.WITH_BBX_REFINE and m.WITH_REF_POINT_REFINE:
        raise ValueError(
            "MODEL.WITH_BBX_REFINE and MODEL.WITH_REF_POINT_REFINE are both True: they are exclusive, "
            "select one of the two"
        )
    backbone = build_backbone(
        m.BACKBONE,
        train_backbone=float(cfg.SOLVER.LR_BACKBONE) > 0,
        dilation=bool(m.BACKBONE_DILATION),
        pretrained=m.BACKBONE_PRETRAINED,
    )
    if position_embedding is None:
        position_embedding = PositionEmbeddingSine(m.HIDDEN_DIM // 2, normalize=True)
    joiner = Joiner(backbone, position_embedding)
    t = m.TRANSFORMER
    # Note: the official builder swaps ENC_N_POINTS/DEC_N_POINTS (harmless at 4/4); here each key means
    # itself.
    transformer = DeformableTransformer(
        d_model=m.HIDDEN_DIM,
        nhead=t.N_HEADS,
        num_encoder_layers=t.ENCODER_LAYERS,
        num_decoder_layers=t.DECODER_LAYERS,
        dim_feedforward=m.DIM_FEEDFORWARD,
        dropout=m.DROPOUT,
        num_feature_levels=m.NUM_FEATURE_LEVELS,
        enc_n_points=t.ENC_N_POINTS,
        dec_n_points=t.DEC_N_POINTS,
        with_gradient=m.BBX_GRADIENT_PROP,
        attn_impl=m.DEFORM_ATTN_IMPL,
        encoder_attn=encoder_attn,
        decoder_attn=decoder_attn,
        clip_queries=clip_queries,
    )
    return DeformableDETR(
        joiner,
        transformer,
        num_classes=num_classes,
        num_queries=m.NUM_QUERIES,
        num_feature_levels=m.NUM_FEATURE_LEVELS,
        aux_loss=m.LOSS.AUX_LOSS,
        with_box_refine=m.WITH_BBX_REFINE,
        with_ref_point_refine=m.WITH_REF_POINT_REFINE,
        bbox_gradient_prop=m.BBX_GRADIENT_PROP,
    )
