"""A tiny but real query-based clip mask model, for the engine's tests and the quickstart.

Per frame, a small conv encoder gives stride-4 pixel embeddings. Q learned clip queries attend to pooled
tokens of all frames of the clip, then each query predicts a class and, by a dot product with every frame's
pixel embeddings, one mask per frame: one query = one instance over the whole clip, so tracking is free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.structures.clip_batch import ClipBatch


def _coords(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[2, h, w]`` normalised (x, y) in [-1, 1]: lets pixel embeddings and queries use position."""
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, mem: torch.Tensor, mem_pad: torch.Tensor | None) -> torch.Tensor:
        q = self.n1(q + self.cross(q, mem, mem, key_padding_mask=mem_pad, need_weights=False)[0])
        q = self.n2(q + self.self_attn(q, q, q, need_weights=False)[0])
        return self.n3(q + self.ffn(q))


class ToyVISModel(nn.Module):
    """Clip queries -> classes and per-frame masks.

    Args:
        num_classes: K foreground classes (logits have K + 1, the last is "no object").
        num_queries: Q.
        hidden_dim: D.
        dec_layers: decoder layers; every layer is supervised (aux outputs for all but the last).
    """

    def __init__(
        self, num_classes: int, num_queries: int = 8, hidden_dim: int = 32, dec_layers: int = 2
    ) -> None:
        super().__init__()
        d = hidden_dim
        self.num_classes = num_classes
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, d, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.refine = nn.Sequential(
            nn.Conv2d(d + 2, d, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(d, d, 1)
        )
        self.pos = nn.Linear(2, d)
        self.query_embed = nn.Embedding(num_queries, d)
        self.layers = nn.ModuleList([_DecoderLayer(d, 4) for _ in range(dec_layers)])
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d))

    def forward(self, batch: ClipBatch) -> dict:
        """Outputs for ``batch.frames [B, T, 3, H, W]``.

        Returns:
            ``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, T, H/4, W/4]`` (logits), ``aux_outputs`` (list of
            dicts with the same keys, one per decoder layer but the last).
        """
        b, t, _, h, w = batch.frames.shape
        x = self.encoder(batch.frames.flatten(0, 1))  # [BT, D, H/4, W/4]
        hh, ww = x.shape[-2:]
        coords = _coords(hh, ww, x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
        pix = self.refine(torch.cat([x, coords], dim=1))  # [BT, D, h, w]
        # Memory tokens: 4x pooled pixel embeddings of all frames, plus position.
        tok = F.adaptive_avg_pool2d(pix, (max(1, hh // 4), max(1, ww // 4)))
        th, tw = tok.shape[-2:]
        pos = self.pos(_coords(th, tw, x.device, x.dtype).flatten(1).t())  # [th*tw, D]
        tok = tok.flatten(2).transpose(1, 2) + pos  # [BT, th*tw, D]
        mem = tok.reshape(b, t * th * tw, -1)
        mem_pad = None
        if batch.pad_mask is not None:
            pad = F.interpolate(batch.pad_mask.flatten(0, 1)[:, None].float(), size=(th, tw), mode="nearest")
            mem_pad = pad.reshape(b, t * th * tw) > 0.5
            mem_pad = mem_pad & ~mem_pad.all(dim=1, keepdim=True)  # never mask every token
        q = self.query_embed.weight[None].expand(b, -1, -1)
        pix = pix.reshape(b, t, -1, hh, ww)
        preds = []
        for layer in self.layers:
            q = layer(q, mem, mem_pad)
            masks = torch.einsum("bqd,btdhw->bqthw", self.mask_embed(q), pix)
            preds.append({"pred_logits": self.class_embed(q), "pred_masks": masks})
        out = dict(preds[-1])
        out["aux_outputs"] = preds[:-1]
        return out
