"""Swin Transformer (T/S/B/L, patch 4, window 7 or 12) as a detection backbone with a LayerNorm per output.

Module names follow the original Swin code (``patch_embed.{proj,norm}``, ``layers.{s}.blocks.{b}.{norm1, attn.
{relative_position_bias_table, relative_position_index, qkv, proj}, norm2, mlp.{fc1, fc2}}``,
``layers.{s}.downsample.{reduction, norm}``) plus ``norm{i}`` on each output, so both the ImageNet checkpoints
and the DeVIS Swin checkpoints (``def_detr.backbone.0.body.*``) load by name. Inputs of any size are padded on
the right/bottom: to a multiple of 4 for the patch embedding and to a multiple of the window in every block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.layers import DropPath


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``[B, H, W, C]`` (H, W multiples of ws) -> ``[B * nW, ws, ws, C]``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws, ws, C]`` -> ``[B, H, W, C]``."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def relative_position_index(ws: int) -> torch.Tensor:
    """``[ws*ws, ws*ws]`` long: index into the ``(2ws-1)^2`` bias table for each (query, key) pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(
        1
    )  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # [N, N, 2], each in [-(ws-1), ws-1]
    rel = rel + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias.

    Forward: ``x [B*nW, N, C]`` (N = ws*ws), optional ``mask [nW, N, N]`` (0 or -100) -> ``[B*nW, N, C]``.
    """

    def __init__(
        self, dim: int, window_size: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # A persistent buffer: the official checkpoints contain it, so keep it for strict loading.
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)  # [B*nW, heads, N, N]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` with dropout (Swin names)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention + MLP, each with drop path. ``x [B, H*W, C]`` -> same."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, h: int, w: int, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, hw, c = x.shape
        if hw != h * w:
            raise ValueError(f"SwinBlock: got {hw} tokens for a {h}x{w} map")
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        # Pad right/bottom to whole windows; the padded tokens are zeros after the norm, as in the original.
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, ws).reshape(-1, ws * ws, c)
        windows = self.attn(windows, mask=attn_mask if shift > 0 else None)
        x = window_reverse(windows.view(-1, ws, ws, c), ws, hp, wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def shifted_window_mask(hp: int, wp: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """``[nW, ws*ws, ws*ws]`` additive mask (0 or -100) for a padded ``hp x wp`` map after a cyclic shift.

    After rolling by ``-shift``, a window at the bottom/right edge holds pixels from up to four regions that
    were not neighbours in the image; tokens from different regions must not attend to each other.
    """
    img = torch.zeros(1, hp, wp, 1, device=device)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    region = 0
    for hs in cuts:
        for wsl in cuts:
            img[:, hs, wsl, :] = region
            region += 1
    mw = window_partition(img, ws).reshape(-1, ws * ws)
    diff = mw[:, None, :] - mw[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (4C) -> LayerNorm -> Linear(4C -> 2C, no bias). Odd sizes are zero-padded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # Order (0,0), (1,0), (0,1), (1,1) as in the original: the Linear weight depends on it.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows, then optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                0 if i % 2 == 0 else window_size // 2,
                mlp_ratio,
                drop,
                attn_drop,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Returns ``(stage output [B, h*w, C], next-stage input [B, h'*w', 2C], h', w')``."""
        ws = self.window_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        mask = shifted_window_mask(hp, wp, ws, self.shift_size, x.device)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` conv + LayerNorm. ``[B, 3, H, W]`` -> ``[B, C, ceil(H/p), ceil(W/p)]``."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        b, c, hh, ww = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """Swin body returning ``{"res2".."res5"}`` maps at /4../32 with ``C, 2C, 4C, 8C`` channels.

    Args:
        embed_dim, depths, num_heads, window_size, mlp_ratio: the architecture.
        drop_path_rate: stochastic depth, linearly increasing over all blocks from 0.
        out_indices: stages that get an output LayerNorm ``norm{i}`` and appear in the output (0 = res2;
            default: all).
        frozen_stages: -1 none; 0 patch embedding; k >= 1 also stages ``0..k-1`` (requires_grad False, eval).

    Forward: ``x [B, 3, H, W]`` -> ``{"res{i+2}": [B, C*2^i, ~H/2^(i+2), ~W/2^(i+2)] for i in out_indices}``.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        patch_size: int = 4,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = -1,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.out_indices = tuple(range(len(depths))) if out_indices is None else tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        n = len(depths)
        self.num_features = [embed_dim * 2**i for i in range(n)]
        for i in range(n):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.num_features[i],
                    depths[i],
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    drop_rate,
                    attn_drop_rate,
                    dpr[start : start + depths[i]],
                    downsample=i < n - 1,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.out_channels = {f"res{i + 2}": self.num_features[i] for i in self.out_indices}
        self.strides = {f"res{i + 2}": patch_size * 2**i for i in self.out_indices}
        self.apply(_init_weights)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            self.patch_embed.requires_grad_(False)
        for i in range(max(self.frozen_stages, 0)):
            self.layers[i].eval()
            self.layers[i].requires_grad_(False)

    def train(self, mode: bool = True) -> SwinTransformer:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.layers):
            out, x, nh, nw = stage(x, h, w)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs[f"res{i + 2}"] = (
                    out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                )
            h, w = nh, nw
        return outs

    def freeze_for_training(self, train_backbone: bool) -> None:
        """Without ``train_backbone`` every parameter is frozen; else only ``frozen_stages`` (DeVIS: none)."""
        if not train_backbone:
            self.requires_grad_(False)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# DeVIS's table (swin_backbone.py configs); swin_t/s/b here output all four stages instead of (1, 2, 3),
# so the mask head's /4 adapter has an input for every Swin.
SWIN_SPECS: dict[str, dict] = {
    "swin_t_p4w7": dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2
    ),
    "swin_s_p4w7": dict(
        embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2
    ),
    "swin_b_p4w7": dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.3
    ),
    "swin_l_p4w7": dict(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7, drop_path_rate=0.3
    ),
    "swin_l_p4w12": dict(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.3
    ),
}
