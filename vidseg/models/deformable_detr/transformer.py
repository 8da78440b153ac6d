"""Deformable DETR transformer: multi-scale deformable encoder, decoder with iterative box refinement.

Post-norm layers (Zhu et al. 2021, as used by DeVIS's image stage). Submodule names follow the official code
so that checkpoints load by name: ``level_embed``, ``reference_points``, ``encoder.layers.{i}.{self_attn,
norm1, linear1, linear2, norm2}``, ``decoder.layers.{i}.{cross_attn, norm1, self_attn, norm2, linear1,
linear2, norm3}``, and ``decoder.bbox_embed`` (attached by :class:`DeformableDETR` for box refinement).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg import ops

__all__ = [
    "DeformableTransformer",
    "DeformableTransformerEncoder",
    "DeformableTransformerDecoder",
    "TransformerOutput",
    "inverse_sigmoid",
]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [0, 1] and both terms to >= eps (official behaviour)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def _msda(d_model: int, n_levels: int, n_heads: int, n_points: int, impl: str) -> nn.Module:
    # Looked up at construction time (not import time) so a backend chosen by the ops package applies.
    return ops.MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=impl)


@dataclass
class TransformerOutput:
    """What the transformer hands to the detection heads and the mask head.

    Attributes:
        hs: decoder outputs of every layer ``[L_dec, B, Q, C]``.
        query_pos: positional part of the queries ``[B, Q, C]``.
        init_reference: initial 2-d reference points ``[B, Q, 2]`` (sigmoid space).
        inter_references: reference used after each layer ``[L_dec, B, Q, 2|4]`` (detached between layers
            unless ``with_gradient``).
        layer_boxes: the box prediction of each layer before any detach ``[L_dec, B, Q, 4]``; ``None`` without
            box refinement (the heads then compute boxes from ``init_reference``).
        memories: encoder memory per level ``[B, C, H_l, W_l]``.
        spatial_shapes: ``[L, 2]`` long (H_l, W_l); level_start_index ``[L]``; valid_ratios ``[B, L, 2]`` (w,
            h).
    """

    hs: Tensor
    query_pos: Tensor
    init_reference: Tensor
    inter_references: Tensor
    layer_boxes: Tensor | None
    memories: list[Tensor]
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor


class DeformableTransformerEncoderLayer(nn.Module):
    """``src = LN1(src + drop(attn(src + pos)))``; ``src = LN2(src + drop(FFN(src)))``.

    Args:
        self_attn: the deformable attention over the feature levels, called as
            ``self_attn(query, reference_points, value, spatial_shapes, level_start_index, padding_mask)``
            (a :class:`vidseg.ops.MSDeformAttn`, or DeVIS's temporal one).
        d_model, d_ffn, dropout: width, FFN width and dropout.
    """

    def __init__(self, self_attn: nn.Module, d_model: int, d_ffn: int, dropout: float):
        super().__init__()
        self.self_attn = self_attn
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Tensor | None,
    ) -> Tensor:
        src2 = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask
        )
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))


class DeformableTransformerEncoder(nn.Module):
    def __init__(self, layer: DeformableTransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor, device: torch.device) -> Tensor:
        """Pixel centres of every level, normalised by the valid (unpadded) extent: ``[B, S, L, 2]`` (x,
        y)."""
        refs = []
        for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
            ys, xs = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ry = ys.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            rx = xs.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((rx, ry), -1))
        ref = torch.cat(refs, 1)
        return ref[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        pos: Tensor,
        padding_mask: Tensor | None,
    ) -> Tensor:
        """src, pos ``[B, S, C]``; padding_mask ``[B, S]`` (True = pad) -> memory ``[B, S, C]``."""
        ref = self.get_reference_points(spatial_shapes, valid_ratios, src.device).to(src.dtype)
        out = src
        for layer in self.layers:
            out = layer(out, pos, ref, spatial_shapes, level_start_index, padding_mask)
        return out


class DeformableTransformerDecoderLayer(nn.Module):
    """Self-attention over queries -> LN2; deformable cross-attention -> LN1; FFN -> LN3 (official names).

    Args:
        cross_attn: the deformable attention from the queries into the encoder memory (same call as the
            encoder's ``self_attn``).
        d_model, d_ffn, dropout: width, FFN width and dropout.
        n_heads: heads of the query self-attention.
    """

    def __init__(
        self,
        cross_attn: nn.Module,
        d_model: int,
        d_ffn: int,
        dropout: float,
        n_heads: int,
        clip_queries: bool = False,
    ):
        super().__init__()
        # DeVIS: one query set ``[1, T*Nq, C]`` (frame-major) for a clip whose T frames are the memory batch;
        # the cross-attention sees it as ``[T, Nq, C]`` (slot i of frame t), the self-attention as one set.
        self.clip_queries = clip_queries
        # Registration order mirrors the official module so state-dict listings line up.
        self.cross_attn = cross_attn
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Tensor | None,
    ) -> Tensor:
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        query, refs = tgt + query_pos, reference_points
        if self.clip_queries:
            t = memory.shape[0]
            if tgt.shape[0] != 1 or tgt.shape[1] % t:
                raise ValueError(
                    f"clip queries must be [1, T*Nq, C] for a memory of T={t} frames, got {tuple(tgt.shape)}"
                )
            query = query.view(t, -1, query.shape[-1])
            refs = refs.view(t, -1, *refs.shape[2:])
        tgt2 = self.cross_attn(query, refs, memory, spatial_shapes, level_start_index, padding_mask)
        tgt = self.norm1(tgt + self.dropout1(tgt2.reshape(tgt.shape)))
        tgt2 = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(tgt2))


class DeformableTransformerDecoder(nn.Module):
    """Decoder with optional iterative box refinement (``bbox_embed``) or xy-only reference-point refinement
    (``ref_point_embed``, DeVIS's ``WITH_REF_POINT_REFINE``; references stay 2-d).

    ``bbox_embed`` (a ModuleList of per-layer box MLPs) is attached by the owning model, as in the official
    code, which is why official checkpoints hold ``transformer.decoder.bbox_embed.*`` next to
    ``bbox_embed.*``.
    """

    def __init__(
        self, layer: DeformableTransformerDecoderLayer, num_layers: int, with_gradient: bool = False
    ):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.num_layers = num_layers
        self.with_gradient = with_gradient
        self.bbox_embed: nn.ModuleList | None = None
        # xy-only refinement (MODEL.WITH_REF_POINT_REFINE), attached by the owning model; exclusive with
        # bbox_embed.
        self.ref_point_embed: nn.ModuleList | None = None

    def forward(
        self,
        tgt: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        query_pos: Tensor,
        padding_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns hs ``[L_dec,B,Q,C]``, references used after each layer ``[L_dec,B,Q,2|4]`` and the
        per-layer boxes before detaching ``[L_dec,B,Q,4]`` (None without refinement)."""
        out = tgt
        hs, refs, boxes = [], [], []
        for lid, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_in = reference_points[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            else:
                ref_in = reference_points[:, :, None] * valid_ratios[:, None]
            out = layer(out, query_pos, ref_in, memory, spatial_shapes, level_start_index, padding_mask)
            if self.bbox_embed is not None:
                delta = self.bbox_embed[lid](out)
                if reference_points.shape[-1] == 4:
                    new_ref = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    # Layer 0 refines a 2-d point into a box: the MLP's wh output is the box size logit.
                    new_ref = torch.cat(
                        [delta[..., :2] + inverse_sigmoid(reference_points), delta[..., 2:]], -1
                    )
                    new_ref = new_ref.sigmoid()
                boxes.append(new_ref)
                # Standard D-DETR detaches between layers; DeVIS (BBX_GRADIENT_PROP) lets gradients flow
                # through.
                reference_points = new_ref if self.with_gradient else new_ref.detach()
            elif self.ref_point_embed is not None:
                # Moves the 2-d point only; not detached, as in the official code.
                delta = self.ref_point_embed[lid](out)
                reference_points = (delta + inverse_sigmoid(reference_points)).sigmoid()
            hs.append(out)
            refs.append(reference_points)
        return torch.stack(hs), torch.stack(refs), (torch.stack(boxes) if boxes else None)


class DeformableTransformer(nn.Module):
    """Encoder + decoder over L flattened feature levels.

    Args:
        d_model: hidden size C. nhead: attention heads M. dim_feedforward: FFN width.
        num_feature_levels: L. enc_n_points / dec_n_points: sampling points per head and level.
        with_gradient: BBX_GRADIENT_PROP (no detach of refined boxes between decoder layers).
        attn_impl: deformable-attention backend passed to :class:`vidseg.ops.MSDeformAttn`.
        encoder_attn / decoder_attn: the attention module of one encoder / decoder layer, cloned for every
            layer; None builds the spatial ``MSDeformAttn`` from the sizes above. DeVIS passes its temporal
            attention here instead of subclassing the transformer.
        clip_queries: DeVIS video mode. The B inputs are the T frames of ONE clip: the decoder holds a single
            query set ``[1, Q = T*Nq, C]`` (frame-major), self-attention spans all Q queries, the
            cross-attention gets them as ``[T, Nq, C]`` with references ``[T, Nq, L, 2|4]``, and reference
            points are scaled by the valid ratios of frame 0 (as officially). Outputs then have batch 1.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
        with_gradient: bool = False,
        attn_impl: str = "auto",
        encoder_attn: nn.Module | None = None,
        decoder_attn: nn.Module | None = None,
        clip_queries: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        self.clip_queries = clip_queries
        self.nhead = nhead
        self.num_feature_levels = num_feature_levels
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        if encoder_attn is None:
            encoder_attn = _msda(d_model, num_feature_levels, nhead, enc_n_points, attn_impl)
        if decoder_attn is None:
            decoder_attn = _msda(d_model, num_feature_levels, nhead, dec_n_points, attn_impl)
        self._attn_types = (ops.MSDeformAttn, type(encoder_attn), type(decoder_attn))
        enc = DeformableTransformerEncoderLayer(encoder_attn, d_model, dim_feedforward, dropout)
        self.encoder = DeformableTransformerEncoder(enc, num_encoder_layers)
        dec = DeformableTransformerDecoderLayer(
            decoder_attn, d_model, dim_feedforward, dropout, nhead, clip_queries=clip_queries
        )
        self.decoder = DeformableTransformerDecoder(dec, num_decoder_layers, with_gradient)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # The deformable-attention modules own their init (zero offsets weight, "ray" biases, zero attn
        # weights); a composed attention module (DeVIS's temporal one) does so through _reset_parameters.
        for m in self.modules():
            if isinstance(m, self._attn_types) and hasattr(m, "_reset_parameters"):
                m._reset_parameters()
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask: Tensor) -> Tensor:
        """mask ``[B, H, W]`` (True = pad) -> valid fraction ``[B, 2]`` as (w, h)."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1)
        valid_w = (~mask[:, 0, :]).sum(1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def forward(
        self, srcs: list[Tensor], masks: list[Tensor], pos_embeds: list[Tensor], query_embed: Tensor
    ) -> TransformerOutput:
        """srcs / pos_embeds ``[B, C, H_l, W_l]`` per level, masks ``[B, H_l, W_l]``; query_embed ``[Q, 2C]``
        (first C = query position, last C = content)."""
        if len(srcs) != self.num_feature_levels:
            raise ValueError(
                f"DeformableTransformer: expected {self.num_feature_levels} levels, got {len(srcs)}"
            )
        src_flat, mask_flat, pos_flat, shapes = [], [], [], []
        for lvl, (src, mask, pos) in enumerate(zip(srcs, masks, pos_embeds)):
            shapes.append(src.shape[-2:])
            src_flat.append(src.flatten(2).transpose(1, 2))
            mask_flat.append(mask.flatten(1))
            pos_flat.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src_flatten = torch.cat(src_flat, 1)
        mask_flatten = torch.cat(mask_flat, 1)
        pos_flatten = torch.cat(pos_flat, 1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1).to(src_flatten.dtype)

        memory = self.encoder(
            src_flatten, spatial_shapes, level_start_index, valid_ratios, pos_flatten, mask_flatten
        )

        b, _, c = memory.shape
        nb = 1 if self.clip_queries else b  # one query set per clip, else per image
        query_pos, tgt = torch.split(query_embed, c, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(nb, -1, -1)
        tgt = tgt.unsqueeze(0).expand(nb, -1, -1)
        init_reference = self.reference_points(query_pos).sigmoid()
        hs, inter_refs, layer_boxes = self.decoder(
            tgt,
            init_reference,
            memory,
            spatial_shapes,
            level_start_index,
            valid_ratios[:1] if self.clip_queries else valid_ratios,
            query_pos,
            mask_flatten,
        )

        memories = [
            m.transpose(1, 2).reshape(b, c, int(h), int(w))
            for m, (h, w) in zip(memory.split([int(h) * int(w) for h, w in shapes], dim=1), shapes)
        ]
        return TransformerOutput(
            hs,
            query_pos,
            init_reference,
            inter_refs,
            layer_boxes,
            memories,
            spatial_shapes,
            level_start_index,
            valid_ratios,
        )
