"""The masked-attention transformer decoder of Mask2Former, VITA's variant (grattvis.md §2.3).

Official names (under ``sem_seg_head.predictor.``): ``transformer_{cross,self}_attention_layers.{i}.
{multihead_attn|self_attn}.*`` and ``.norm``, ``transformer_ffn_layers.{i}.{linear1, linear2, norm}``,
``decoder_norm``, ``query_feat``, ``query_embed``, ``level_embed`` (an Embedding), ``class_embed`` and
``mask_embed.layers.{0,1,2}``. ``input_proj`` holds no weights when the feature width equals the hidden width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.layers.mlp import MLP
from vidseg.layers.position_encoding import PositionEmbeddingSine

__all__ = ["MaskedTransformerDecoder", "attention_mask_from_masks"]


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Self-attention; queries and keys get ``query_pos``. Sequences are ``[N, B, C]``.

    Post-norm: ``norm(x + attn(x))``. Pre-norm (``pre_norm=True``, the official ``forward_pre``):
    ``x + attn(norm(x))``, where the normalised ``x`` is also the value. Same parameters either way.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, pre_norm: bool = False) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        _xavier(self)

    def forward(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        q = k = x + query_pos
        out = tgt + self.dropout(self.self_attn(q, k, value=x, need_weights=False)[0])
        return out if self.pre_norm else self.norm(out)


class CrossAttentionLayer(nn.Module):
    """(Masked) cross-attention of the queries ``[Q, B, C]`` to a memory ``[S, B, C]``.

    Post-norm: ``norm(q + attn(q, mem))``; pre-norm: ``q + attn(norm(q), mem)`` (only the queries are
    normalised; the memory is used as given, as the official ``forward_pre``).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, pre_norm: bool = False) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        _xavier(self)

    def forward(self, tgt: Tensor, memory: Tensor, attn_mask: Tensor | None, pos: Tensor, query_pos: Tensor):
        x = self.norm(tgt) if self.pre_norm else tgt
        attn = self.multihead_attn(
            x + query_pos, memory + pos, value=memory, attn_mask=attn_mask, need_weights=False
        )[0]
        out = tgt + self.dropout(attn)
        return out if self.pre_norm else self.norm(out)


class FFNLayer(nn.Module):
    """FFN ``C -> dim_feedforward -> C`` with ReLU: ``norm(x + ffn(x))``, or ``x + ffn(norm(x))`` pre-norm."""

    def __init__(
        self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, pre_norm: bool = False
    ) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        _xavier(self)

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        out = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return out if self.pre_norm else self.norm(out)


def attention_mask_from_masks(mask_logits: Tensor, size: tuple[int, int], num_heads: int) -> Tensor:
    """The cross-attention mask of the next layer from the current mask prediction.

    The logits are bilinearly resized (align_corners False) to the next level's ``size``; a position is
    blocked (True) where the probability is below 0.5. A query whose every position is blocked would attend
    to nothing (a NaN softmax), so its row is unblocked entirely, as the official decoder does.

    Args:
        mask_logits: ``[B, Q, h, w]``.
    Returns:
        ``[B * num_heads, Q, H_l * W_l]`` bool (``nn.MultiheadAttention``'s 3-d ``attn_mask``: batch-major,
        heads inner), detached.
    """
    m = F.interpolate(mask_logits.detach(), size=size, mode="bilinear", align_corners=False)
    blocked = m.sigmoid().flatten(2) < 0.5
    blocked[blocked.all(-1)] = False
    return blocked.repeat_interleave(num_heads, dim=0)


class MaskedTransformerDecoder(nn.Module):
    """Learnable queries refined by masked cross-attention to the pixel decoder's levels.

    Args:
        in_channels: width of the multi-scale features (256).
        num_classes: K (the class head has K+1 outputs, the last "no object").
        hidden_dim / num_queries / nheads / dim_feedforward / dropout: 256 / 100 / 8 / 2048 / 0.
        dec_layers: ``MODEL.MASK_FORMER.DEC_LAYERS`` (10): 9 decoder layers plus the prediction on the
            initial queries.
        mask_dim: width of the mask features (256).
        num_feature_levels: 3 (layer ``i`` reads level ``i % 3``, coarse first).
        enforce_input_proj: a 1x1 conv per level even when ``in_channels == hidden_dim``.
        num_frame_query_layers: how many of the last layers' normalised queries ``frame_queries`` keeps in
            training (VITA's ``LAST_LAYER_NUM``, 3); evaluation keeps the last only.
        pre_norm: ``MODEL.MASK_FORMER.PRE_NORM``: every attention and FFN layer normalises its input instead
            of its output (the official ``forward_pre``); ``decoder_norm`` still normalises every prediction.
            The parameters and their names are the same.

    Forward: ``features`` (3 maps ``[B, C, H_l, W_l]``, coarse first), ``mask_features [B, mask_dim, H/4,
    W/4]`` -> dict with ``"pred_logits" [B, Q, K+1]``, ``"pred_masks" [B, Q, H/4, W/4]`` (the last layer),
    ``"aux_outputs"`` (``dec_layers - 1`` dicts of the same two keys: the initial queries, then layers
    0..L-2) and ``"frame_queries" [L', B, Q, C]``.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_classes: int = 80,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 10,
        mask_dim: int = 256,
        dropout: float = 0.0,
        num_feature_levels: int = 3,
        enforce_input_proj: bool = False,
        num_frame_query_layers: int = 3,
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        if dec_layers < 2:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 2 (got {dec_layers})")
        self.num_heads = nheads
        self.num_layers = dec_layers - 1
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.num_frame_query_layers = max(1, min(num_frame_query_layers, self.num_layers))
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, 1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Old Mask2Former files name the content queries ``static_query``.
        old = prefix + "static_query.weight"
        if old in state_dict and prefix + "query_feat.weight" not in state_dict:
            state_dict[prefix + "query_feat.weight"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def prediction_heads(self, output: Tensor, mask_features: Tensor, size: tuple[int, int]):
        """``output [Q, B, C]`` -> (normalised queries ``[B, Q, C]``, logits ``[B, Q, K+1]``, mask logits
        ``[B, Q, H/4, W/4]``, the next layer's attention mask)."""
        dec = self.decoder_norm(output).transpose(0, 1)
        logits = self.class_embed(dec)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(dec), mask_features)
        return dec, logits, masks, attention_mask_from_masks(masks, size, self.num_heads)

    def forward(self, features: list[Tensor], mask_features: Tensor) -> dict:
        if len(features) != self.num_feature_levels:
            raise ValueError(
                f"MaskedTransformerDecoder: {len(features)} feature maps, expected {self.num_feature_levels}"
            )
        sizes, src, pos = [], [], []
        for i, x in enumerate(features):
            sizes.append(tuple(x.shape[-2:]))
            mask = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
            pos.append(self.pe_layer(mask).to(x.dtype).flatten(2).permute(2, 0, 1))
            src.append(
                (self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(
                    2, 0, 1
                )
            )
        b = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, b, 1)

        _, logits, masks, attn_mask = self.prediction_heads(output, mask_features, sizes[0])
        all_logits, all_masks, queries = [logits], [masks], []
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output, src[lvl], attn_mask, pos[lvl], query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            dec, logits, masks, attn_mask = self.prediction_heads(
                output, mask_features, sizes[(i + 1) % self.num_feature_levels]
            )
            all_logits.append(logits)
            all_masks.append(masks)
            queries.append(dec)
        keep = self.num_frame_query_layers if self.training else 1
        return {
            "pred_logits": all_logits[-1],
            "pred_masks": all_masks[-1],
            "aux_outputs": [
                {"pred_logits": a, "pred_masks": m} for a, m in zip(all_logits[:-1], all_masks[:-1])
            ],
            "frame_queries": torch.stack(queries[-keep:]),
        }
