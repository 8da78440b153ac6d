"""DeVIS multi-scale mask head: multi-head attention maps + an FPN-like conv head (devis.md §2.6).

Two modules, held by the model under the official names ``bbox_attention`` and ``mask_head``:

1. :class:`MultiScaleMHAttentionMap` turns each selected query embedding into 8 attention maps over the
   encoder memory at /32, /16 and /8 (one softmax over heads x pixels, as DETR's ``MHAttentionMap``).
2. :class:`MaskHeadConv` concatenates those maps with the memory and refines them coarse-to-fine, adding
   adapted encoder memory (/16, /8) and backbone features (/4), to mask logits at /4.

Everything is per image: a video model passes its frames as the batch dimension (``B = T`` frames of one
clip, ``N`` = selected instances per frame) and gets ``[T, N, H/4, W/4]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MultiScaleMHAttentionMap",
    "MaskHeadConv",
    "run_mask_head",
    "select_mask_head_features",
    "RES_TO_MEMORY_LEVEL",
    "RES_TO_BACKBONE",
]

# Index of each resolution in the encoder memory / input-projection lists (levels /8, /16, /32, /64).
RES_TO_MEMORY_LEVEL = {"/8": 0, "/16": 1, "/32": 2, "/64": 3}
# Backbone feature names (features-only interface) per resolution.
RES_TO_BACKBONE = {"/4": "res2", "/8": "res3", "/16": "res4", "/32": "res5"}


def _plain_conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
    # DETR mask-head init: kaiming-uniform with a=1, zero bias.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.constant_(conv.bias, 0)
    return conv


def _conv3x3(in_ch: int, out_ch: int, use_mdc: bool) -> nn.Module:
    if use_mdc:
        from vidseg.ops import ModulatedDeformConv2d  # submodules offset_conv / modulator_conv / regular_conv

        return ModulatedDeformConv2d(
            in_ch, out_ch, kernel_size=3, stride=1, padding=1, dilation=1, bias=False
        )
    return _plain_conv(in_ch, out_ch, 3)


class MultiScaleMHAttentionMap(nn.Module):
    """Per-query multi-head attention maps over several memory levels (no values: the maps are the output).

    Submodules ``q_linear``, ``k_linear`` (level 0), ``q_linear_{i}``, ``k_linear_{i}`` (level i), all
    ``Linear(query_dim, hidden_dim)`` with xavier weights and zero bias (official key names).

    Args:
        query_dim: D of the query embeddings and of the memory maps.
        hidden_dim: projection size, split into ``num_heads`` heads.
        num_heads: M.
        num_levels: number of memory levels (3 for /32, /16, /8).
    """

    def __init__(self, query_dim: int = 256, hidden_dim: int = 256, num_heads: int = 8, num_levels: int = 3):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.hidden_dim = hidden_dim
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5
        for i in range(num_levels):
            suffix = "" if i == 0 else f"_{i}"
            for kind in ("q", "k"):
                lin = nn.Linear(query_dim, hidden_dim)
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
                setattr(self, f"{kind}_linear{suffix}", lin)

    def _linears(self, i: int) -> tuple[nn.Linear, nn.Linear]:
        suffix = "" if i == 0 else f"_{i}"
        return getattr(self, f"q_linear{suffix}"), getattr(self, f"k_linear{suffix}")

    def forward(
        self,
        queries: torch.Tensor,
        memories: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None] | None = None,
    ) -> list[torch.Tensor]:
        """
        Args:
            queries: ``[B, N, D]`` embeddings of the selected queries.
            memories: per level ``[B, D, H_r, W_r]`` (coarsest first: /32, /16, /8).
            masks: per level ``[B, H_r, W_r]`` bool, True on padding (or None).
        Returns:
            per level ``[B, N, M, H_r, W_r]`` attention weights; each ``[b, n]`` sums to 1 over heads x
            pixels.
        """
        if len(memories) != self.num_levels:
            raise ValueError(
                f"MultiScaleMHAttentionMap: {len(memories)} memory levels, expected {self.num_levels}"
            )
        if masks is not None and len(masks) != self.num_levels:
            raise ValueError(f"MultiScaleMHAttentionMap: {len(masks)} masks, expected {self.num_levels}")
        b, n, _ = queries.shape
        m, d = self.num_heads, self.hidden_dim // self.num_heads
        out = []
        for i, mem in enumerate(memories):
            q_lin, k_lin = self._linears(i)
            q = q_lin(queries).view(b, n, m, d) * self.normalize_fact
            # The key projection is a 1x1 conv with the linear's weights: no flatten/permute of the memory.
            k = F.conv2d(mem, k_lin.weight[:, :, None, None], k_lin.bias)
            k = k.view(b, m, d, mem.shape[-2], mem.shape[-1])
            w = torch.einsum("bqnc,bnchw->bqnhw", q, k)
            if masks is not None and masks[i] is not None:
                w = w.masked_fill(masks[i][:, None, None], float("-inf"))
            out.append(F.softmax(w.flatten(2), dim=-1).view_as(w))
        return out


class MaskHeadConv(nn.Module):
    """FPN-like conv head with GroupNorm(8) and (modulated deformable) 3x3 convs (official key names).

    Channel plan for ``dim=256``, 3 FPN inputs, 3 attention levels, 8 heads::

        x = cat(mem/32, att/32)        264 -> lay1 264 -> lay2 128
        x = adapter1(f/16) + up(x); cat att/16   136 -> lay3 64
        x = adapter2(f/8)  + up(x); cat att/8     72 -> lay4 32
        x = adapter3(f/4)  + up(x)                32 -> lay5 16 -> out_lay 1

    Args:
        dim: channels of the first feature map (the /32 memory), C.
        fpn_dims: channels of the later feature maps (e.g. ``(256, 256, 256)``; R50 backbone /4 is 256,
            Swin-L 192).
        num_heads: attention heads (channels of each attention map).
        num_att_levels: how many attention levels are concatenated (level i joins before ``lay{i+2}``; i=0
            before ``lay1``).
        use_mdc: modulated deformable convs for ``lay*``/``out_lay`` (``vidseg.ops.ModulatedDeformConv2d``),
            else plain 3x3 convs.
        out_layer: add ``out_lay`` (C/2^(L+1) -> 1); without it the head returns the last feature map.
    """

    def __init__(
        self,
        dim: int = 256,
        fpn_dims: Sequence[int] = (256, 256, 256),
        num_heads: int = 8,
        num_att_levels: int = 3,
        use_mdc: bool = True,
        out_layer: bool = True,
    ) -> None:
        super().__init__()
        num_levels = len(fpn_dims) + 1
        if not 1 <= num_att_levels <= num_levels:
            raise ValueError(f"MaskHeadConv: num_att_levels {num_att_levels} not in 1..{num_levels}")
        out_dims = [dim // 2**e for e in range(num_levels + 2)]
        in_dims = list(out_dims)
        for i in range(num_att_levels):
            in_dims[i] += num_heads
        self.num_att_levels = num_att_levels
        self.num_fpn = len(fpn_dims)

        self.lay1 = _conv3x3(in_dims[0], in_dims[0], use_mdc)
        self.gn1 = nn.GroupNorm(8, in_dims[0])
        self.lay2 = _conv3x3(in_dims[0], out_dims[1], use_mdc)
        self.gn2 = nn.GroupNorm(8, out_dims[1])
        for i in range(1, len(fpn_dims) + 1):
            setattr(self, f"lay{i + 2}", _conv3x3(in_dims[i], out_dims[i + 1], use_mdc))
            setattr(self, f"gn{i + 2}", nn.GroupNorm(8, out_dims[i + 1]))
            setattr(self, f"adapter{i}", _plain_conv(fpn_dims[i - 1], out_dims[i], 1))
        self.out_lay = _conv3x3(out_dims[len(fpn_dims) + 1], 1, use_mdc) if out_layer else None

    def forward(self, features: Sequence[torch.Tensor], att_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: ``[B, C_0, H_0, W_0]`` (the /32 memory) then the FPN inputs ``[B, C_i, H_i, W_i]``
                (e.g. memory /16, memory /8, backbone /4).
            att_maps: per attention level ``[B, N, M, H_r, W_r]`` (from ``MultiScaleMHAttentionMap``), with
                ``H_r, W_r`` equal to the corresponding feature sizes.
        Returns:
            ``[B, N, H_L, W_L]`` mask logits at the last feature's resolution (``[B, N, C', H_L, W_L]``
            without ``out_lay``).
        """
        if len(features) != self.num_fpn + 1:
            raise ValueError(f"MaskHeadConv: {len(features)} feature maps, expected {self.num_fpn + 1}")
        if len(att_maps) < self.num_att_levels:
            raise ValueError(f"MaskHeadConv: {len(att_maps)} attention maps, expected {self.num_att_levels}")
        b, n = att_maps[0].shape[:2]

        def expand(x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B*N, C, H, W], batch-major
            return x.repeat_interleave(n, dim=0)

        x = torch.cat([expand(features[0]), att_maps[0].flatten(0, 1)], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for lvl, feat in enumerate(features[1:], start=1):
            # The adapter runs once per image and is broadcast over the instances in the sum (identical
            # for all of them), instead of adapting or materialising N copies.
            cur = getattr(self, f"adapter{lvl}")(feat)  # [B, C, H, W]
            up = F.interpolate(x, size=cur.shape[-2:], mode="nearest")
            x = (up.view(b, n, *up.shape[1:]) + cur[:, None]).flatten(0, 1)
            if lvl < self.num_att_levels:
                x = torch.cat([x, att_maps[lvl].flatten(0, 1)], 1)
            x = F.relu(getattr(self, f"gn{lvl + 2}")(getattr(self, f"lay{lvl + 2}")(x)))
        if self.out_lay is None:
            return x.view(b, n, *x.shape[1:])
        x = self.out_lay(x)
        return x.view(b, n, *x.shape[-2:])


def run_mask_head(
    bbox_attention: MultiScaleMHAttentionMap,
    mask_head: MaskHeadConv,
    queries: torch.Tensor,
    att_memories: Sequence[torch.Tensor],
    att_masks: Sequence[torch.Tensor | None] | None,
    features: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Mask logits of the selected queries.

    Args:
        queries: ``[B, N, D]`` decoder embeddings of the selected queries (frames as batch for video).
        att_memories: encoder memory at the attention resolutions, ``[B, D, H_r, W_r]`` (/32, /16, /8).
        att_masks: matching padding masks ``[B, H_r, W_r]`` (True = pad), or None.
        features: mask-head inputs (see ``select_mask_head_features``), e.g. memory /32, /16, /8 and backbone
            /4 ``[B, C4, H/4, W/4]``.
    Returns:
        ``[B, N, H/4, W/4]`` mask logits.
    """
    return mask_head(features, bbox_attention(queries, att_memories, att_masks))


def select_mask_head_features(
    used_features: Sequence[Sequence[str]],
    backbone_features: Mapping[str, torch.Tensor],
    memories: Sequence[torch.Tensor],
    srcs: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Pick the mask-head inputs named by ``MODEL.MASK_HEAD.USED_FEATURES``.

    Args:
        used_features: pairs ``(resolution, kind)``, resolution in ``/4 /8 /16 /32 /64``, kind in
            ``encoded`` (encoder memory), ``backbone`` (raw backbone map), ``compressed_backbone`` (input
            projection output).
        backbone_features: ``{"res2": [B, C2, H/4, W/4], ..., "res5": ...}``.
        memories: encoder memory per level ``[B, D, H_l, W_l]`` ordered /8, /16, /32, /64 (a single level when
            the model uses one feature level: it is then used for every ``encoded`` entry).
        srcs: input-projection outputs in the same level order (only for ``compressed_backbone``).
    Returns:
        the feature maps in the order of ``used_features``.
    """
    out = []
    for res, kind in used_features:
        if kind == "encoded":
            out.append(memories[0] if len(memories) == 1 else memories[RES_TO_MEMORY_LEVEL[res]])
        elif kind == "backbone":
            if res not in RES_TO_BACKBONE:
                raise ValueError(f"MODEL.MASK_HEAD.USED_FEATURES: no backbone map at {res}")
            out.append(backbone_features[RES_TO_BACKBONE[res]])
        elif kind == "compressed_backbone":
            if srcs is None or res not in RES_TO_MEMORY_LEVEL:
                raise ValueError(f"MODEL.MASK_HEAD.USED_FEATURES: no compressed backbone map at {res}")
            out.append(srcs[RES_TO_MEMORY_LEVEL[res]])
        else:
            raise ValueError(
                f"MODEL.MASK_HEAD.USED_FEATURES: unknown kind {kind!r} "
                "(expected encoded, backbone or compressed_backbone)"
            )
    return out


def mask_head_kwargs(
    used_features: Sequence[Sequence[str]],
    att_resolutions: Sequence[str],
    hidden_dim: int,
    backbone_channels: Mapping[str, int],
    use_mdc: bool,
    num_heads: int = 8,
) -> tuple[dict, dict]:
    """Constructor kwargs of (``MultiScaleMHAttentionMap``, ``MaskHeadConv``) for the given features."""
    if not used_features or used_features[0][0] != att_resolutions[0]:
        raise ValueError(
            "MODEL.MASK_HEAD: USED_FEATURES must start at the first UPSAMPLING_RESOLUTIONS entry, got "
            f"{list(used_features)[:1]} and {list(att_resolutions)[:1]}"
        )
    fpn_dims = []
    for res, kind in used_features[1:]:
        if kind == "backbone":
            key = RES_TO_BACKBONE.get(res)
            if key not in backbone_channels:
                raise ValueError(f"MODEL.MASK_HEAD.USED_FEATURES: backbone has no {res} map ({key})")
            fpn_dims.append(int(backbone_channels[key]))
        else:
            fpn_dims.append(hidden_dim)
    att = {
        "query_dim": hidden_dim,
        "hidden_dim": hidden_dim,
        "num_heads": num_heads,
        "num_levels": len(att_resolutions),
    }
    head = {
        "dim": hidden_dim,
        "fpn_dims": tuple(fpn_dims),
        "num_heads": num_heads,
        "num_att_levels": len(att_resolutions),
        "use_mdc": use_mdc,
    }
    return att, head
