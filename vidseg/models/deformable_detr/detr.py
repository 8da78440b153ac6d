"""Deformable DETR (with iterative box refinement): backbone joiner, input projections, per-layer heads.

Official submodule names: ``backbone.0.body.*`` (features), ``backbone.1`` (sine position encoding, no state),
``transformer.*``, ``class_embed.{l}``, ``bbox_embed.{l}.layers.{0,1,2}``, ``query_embed``,
``input_proj.{i}.{0: conv, 1: GroupNorm}``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg import layers
from vidseg.models.deformable_detr.transformer import (
    DeformableTransformer,
    TransformerOutput,
    inverse_sigmoid,
)

__all__ = ["DeformableDETR", "Joiner", "DetrState", "BACKBONE_LEVELS"]

BACKBONE_LEVELS = ("res2", "res3", "res4", "res5")  # strides 4, 8, 16, 32


class Joiner(nn.Sequential):
    """``[backbone, position_encoding]``; indexes ``0`` and ``1`` give the official ``backbone.0.body.*``
    keys.

    ``forward(frames [B,3,H,W], pad_mask [B,H,W])`` returns ``(features, masks)``: dicts keyed ``res2..res5``
    with maps ``[B,C_l,H_l,W_l]`` and padding masks ``[B,H_l,W_l]`` (nearest-resized image mask, True = pad).
    """

    def __init__(self, backbone: nn.Module, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.out_channels: dict[str, int] = dict(backbone.out_channels)
        self.strides: dict[str, int] = dict(backbone.strides)

    def forward(self, frames: Tensor, pad_mask: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        feats = self[0](frames)
        masks = {k: resize_mask(pad_mask, f.shape[-2:]) for k, f in feats.items()}
        return feats, masks

    def position(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        return self[1](mask).to(dtype)


def resize_mask(mask: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Nearest resize of a padding mask ``[B,H,W]`` bool to ``size``."""
    return F.interpolate(mask[None].float(), size=tuple(size)).to(torch.bool)[0]


@dataclass
class DetrState:
    """Everything the mask head needs from a Deformable DETR forward.

    Attributes:
        outputs: ``{"pred_logits" [B,Q,K], "pred_boxes" [B,Q,4] cxcywh normalised, "aux_outputs": [...]}``.
        features: backbone maps by name (``res2``..``res5``); srcs: projected levels ``[B,C,H_l,W_l]``;
        masks: padding mask per transformer level ``[B,H_l,W_l]``; transformer: :class:`TransformerOutput`.
    """

    outputs: dict
    features: dict[str, Tensor]
    srcs: list[Tensor]
    masks: list[Tensor]
    transformer: TransformerOutput


class DeformableDETR(nn.Module):
    """Deformable DETR detector.

    Args:
        backbone: :class:`Joiner` of a features-only backbone and a position encoding.
        transformer: :class:`DeformableTransformer` with ``num_feature_levels`` levels.
        num_classes: K, outputs of ``class_embed`` (sigmoid focal classification, no "no-object" logit).
        num_queries: Q. num_feature_levels: 1 (/32), 3 (/8,/16,/32) or >= 4 (extra stride-2 levels).
        aux_loss: return per-layer outputs for layers 0..L_dec-2.
        with_box_refine: separate class/box heads per layer and iterative box refinement.
        with_ref_point_refine: DeVIS's WITH_REF_POINT_REFINE (exclusive with ``with_box_refine``): per-layer
            MLPs ``transformer.decoder.ref_point_embed.{l}`` (256-256-2, last layer zero-initialised) move the
            2-d reference point, ``r_l = sigmoid(ref_point_embed_l(h_l) + inverse_sigmoid(r_{l-1}))``, not
            detached (as officially); boxes keep the shared head:
            ``xy = delta_xy + inverse_sigmoid(r_{l-1})``.
        bbox_gradient_prop: DeVIS's BBX_GRADIENT_PROP (box output of a layer is its non-detached refined box).
    """

    def __init__(
        self,
        backbone: Joiner,
        transformer: DeformableTransformer,
        num_classes: int,
        num_queries: int,
        num_feature_levels: int,
        aux_loss: bool = True,
        with_box_refine: bool = True,
        bbox_gradient_prop: bool = False,
        with_ref_point_refine: bool = False,
    ):
        super().__init__()
        if num_feature_levels == 2 or num_feature_levels < 1:
            raise ValueError(
                f"num_feature_levels must be 1, 3 or more (as in DeVIS), got {num_feature_levels}"
            )
        if transformer.num_feature_levels != num_feature_levels:
            raise ValueError(
                f"transformer has {transformer.num_feature_levels} levels, model {num_feature_levels}"
            )
        if bbox_gradient_prop and not with_box_refine:
            raise ValueError("bbox_gradient_prop needs with_box_refine")
        if with_box_refine and with_ref_point_refine:
            raise ValueError(
                "with_box_refine (MODEL.WITH_BBX_REFINE) and with_ref_point_refine "
                "(MODEL.WITH_REF_POINT_REFINE) are exclusive: select one of the two"
            )
        hidden = transformer.d_model
        self.backbone = backbone
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.aux_loss = aux_loss
        self.with_box_refine = with_box_refine
        self.with_ref_point_refine = with_ref_point_refine
        self.bbox_gradient_prop = bbox_gradient_prop
        self.transformer = transformer
        transformer.decoder.with_gradient = bbox_gradient_prop

        # Levels taken from the backbone; further levels come from stride-2 3x3 convs on the last map.
        self.in_levels = ["res5"] if num_feature_levels == 1 else ["res3", "res4", "res5"]
        class_embed = nn.Linear(hidden, num_classes)
        bbox_embed = layers.MLP(hidden, hidden, 4, 3)
        # Focal-loss prior: every class starts at p = 0.01.
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        num_pred = transformer.decoder.num_layers
        if with_box_refine:
            self.class_embed = nn.ModuleList([copy.deepcopy(class_embed) for _ in range(num_pred)])
            self.bbox_embed = nn.ModuleList([copy.deepcopy(bbox_embed) for _ in range(num_pred)])
            # Initial boxes of layer 0 are small: sigmoid(-2) ~ 0.12 of the image per side.
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
            self.transformer.decoder.bbox_embed = self.bbox_embed
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed] * num_pred)
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_pred)
            if with_ref_point_refine:
                # Held by the decoder only (official key names transformer.decoder.ref_point_embed.{l}.*).
                ref_point_embed = layers.MLP(hidden, hidden, 2, 3)
                nn.init.zeros_(ref_point_embed.layers[-1].weight)
                nn.init.zeros_(ref_point_embed.layers[-1].bias)
                self.transformer.decoder.ref_point_embed = nn.ModuleList(
                    [copy.deepcopy(ref_point_embed) for _ in range(num_pred)]
                )
        self.query_embed = nn.Embedding(num_queries, hidden * 2)

        chans = [backbone.out_channels[k] for k in self.in_levels]
        projs = [nn.Sequential(nn.Conv2d(c, hidden, kernel_size=1), nn.GroupNorm(32, hidden)) for c in chans]
        in_ch = chans[-1]
        for _ in range(num_feature_levels - len(chans)):
            projs.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, hidden, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, hidden)
                )
            )
            in_ch = hidden
        self.input_proj = nn.ModuleList(projs)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

    @property
    def hidden_dim(self) -> int:
        return self.transformer.d_model

    def forward_state(self, frames: Tensor, pad_mask: Tensor) -> DetrState:
        """frames ``[B,3,H,W]`` normalised, pad_mask ``[B,H,W]`` (True = pad) -> :class:`DetrState`."""
        feats, fmasks = self.backbone(frames, pad_mask)
        srcs, masks, pos = [], [], []
        for lvl, name in enumerate(self.in_levels):
            srcs.append(self.input_proj[lvl](feats[name]))
            masks.append(fmasks[name])
        for lvl in range(len(self.in_levels), self.num_feature_levels):
            # The first extra level convolves the raw last backbone map, later ones the previous projection.
            x = feats[self.in_levels[-1]] if lvl == len(self.in_levels) else srcs[-1]
            srcs.append(self.input_proj[lvl](x))
            masks.append(resize_mask(pad_mask, srcs[-1].shape[-2:]))
        pos = [self.backbone.position(m, s.dtype) for s, m in zip(srcs, masks)]

        t = self.transformer(srcs, masks, pos, self.query_embed.weight)
        logits, boxes = [], []
        for lvl in range(t.hs.shape[0]):
            logits.append(self.class_embed[lvl](t.hs[lvl]))
            if t.layer_boxes is not None:
                # Same value as recomputing from the pre-detach reference; with gradient prop it IS the
                # reference.
                boxes.append(t.layer_boxes[lvl])
            else:
                ref = inverse_sigmoid(t.init_reference if lvl == 0 else t.inter_references[lvl - 1])
                delta = self.bbox_embed[lvl](t.hs[lvl])
                if ref.shape[-1] == 4:
                    boxes.append((delta + ref).sigmoid())
                else:
                    boxes.append(torch.cat([delta[..., :2] + ref, delta[..., 2:]], -1).sigmoid())
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        return DetrState(out, feats, srcs, masks, t)

    def forward(self, frames: Tensor, pad_mask: Tensor) -> dict:
        """Detection outputs: ``pred_logits [B,Q,K]``, ``pred_boxes [B,Q,4]`` and ``aux_outputs`` (layers
        0..4)."""
        return self.forward_state(frames, pad_mask).outputs
