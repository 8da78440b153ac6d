"""DeVIS stage 2: initialise a video model's state dict from the COCO image model (devis.md §3.8).

A pure function on state dicts, so it can be tested (and used by ``vidseg convert``) without building a model.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence

import torch

from vidseg.checkpoints.formats import deformable_detr_to_devis

# YouTube-VIS 2019 class j (0-based) -> COCO category id, -1 where COCO has no such class (DeVIS's
# IDS_COCO_TO_YVIS without its last entry, as used with the focal loss). For FINETUNE_CLASS_LOGITS.
COCO_TO_YTVIS19_CLASS_MAP: tuple[int, ...] = (
    1, -1, -1, -1, 41, -1, 3, 18, -1, -1, -1, -1, -1, 17, 21, -1, 7, 19, -1, 23,
    -1, 4, -1, -1, -1, -1, 42, 5, 8, 24, -1, 22, 36, 9, -1, 74, -1, -1, -1, -1,
)  # fmt: skip

# Spatial deformable-attention linears whose outputs are laid out (heads, levels, points[, xy]).
_SPATIAL_ATTN = re.compile(
    r"^(def_detr\.transformer\.(encoder\.layers\.\d+\.self_attn|decoder\.layers\.\d+\.cross_attn))\."
    r"(sampling_offsets|attention_weights)\.(weight|bias)$"
)
PRIOR_PROB = 0.01  # class bias init: sigmoid(bias) = 0.01, bias = -log(99) = -4.595

logger = logging.getLogger(__name__)


def _reshape_levels_points(
    t: torch.Tensor, n_heads: int, n_levels: int, is_offsets: bool
) -> tuple[torch.Tensor, int]:
    """``[M*L*K*(2), (C)]`` -> ``[M, 1, L, K, (2), (C)]`` plus K."""
    per = 2 if is_offsets else 1
    n_out = t.shape[0]
    if n_out % (n_heads * n_levels * per):
        raise ValueError(f"cannot split {n_out} outputs into {n_heads} heads x {n_levels} levels x points")
    k = n_out // (n_heads * n_levels * per)
    shape = [n_heads, 1, n_levels, k] + ([2] if is_offsets else []) + list(t.shape[1:])
    return t.reshape(shape), k


def _temporal_from_spatial(
    t: torch.Tensor,
    n_heads: int,
    n_levels_ckpt: int,
    n_levels: int,
    frames: int,
    points: int,
    is_offsets: bool,
) -> torch.Tensor:
    v, k = _reshape_levels_points(t, n_heads, n_levels_ckpt, is_offsets)
    if points > k or n_levels > n_levels_ckpt:
        raise ValueError(
            f"temporal init needs <= {k} points and <= {n_levels_ckpt} levels from the COCO model"
        )
    v = v.repeat(1, frames, *([1] * (v.dim() - 2)))[:, :, :n_levels, :points]
    return v.reshape(-1, *t.shape[1:]).clone()


def _slice_levels(
    t: torch.Tensor, n_heads: int, n_levels_ckpt: int, n_levels: int, is_offsets: bool
) -> torch.Tensor:
    v, _ = _reshape_levels_points(t, n_heads, n_levels_ckpt, is_offsets)
    return v[:, :, :n_levels].reshape(-1, *t.shape[1:]).clone()


def adapt_coco_to_devis(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_frames: int,
    num_queries: int,
    num_classes: int | None = None,
    num_levels: int = 4,
    n_heads: int = 8,
    enc_temporal_frames: int | None = None,
    enc_points_temporal: int = 4,
    dec_points_temporal: int = 4,
    finetune_temporal_modules: bool = True,
    finetune_query_embeds: bool = False,
    finetune_class_logits: bool = False,
    class_map: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Map a COCO image-model state dict (DeVIS mask-head or Deformable DETR naming) to DeVIS video names.

    Args:
        state_dict: COCO-stage weights (``def_detr.*``, ``bbox_attention.*``, ``mask_head.*``; bare Deformable
            DETR keys are prefixed first).
        num_frames: T. num_queries: T * Nq (``MODEL.NUM_QUERIES``, must be divisible by T).
        num_classes: K of the video dataset; ``class_embed`` is re-initialised with K outputs (bias -4.595).
            None drops ``class_embed`` so the model keeps its own initialisation.
        num_levels: L of the video model (1, 3 or 4); level-indexed tensors are sliced and, for L = 1, the /32
            projection ``input_proj.2`` becomes ``input_proj.0``.
        n_heads: M, to split the attention linears into (heads, levels, points).
        enc_temporal_frames: W of the encoder (default T - 1: connect all frames).
        enc_points_temporal, dec_points_temporal: K_t of encoder and decoder.
        finetune_temporal_modules: build ``temporal_sampling_offsets``/``temporal_attention_weights`` from the
            spatial ones (repeated over W frames, sliced to L levels and K_t points); False leaves them out.
        finetune_query_embeds: keep every (Q_coco / Nq)-th COCO query and tile them over frames; otherwise
            ``query_embed`` is drawn from N(0, 1) with shape ``[T * Nq, 2 * C]``.
        finetune_class_logits, class_map: copy COCO class rows: new class j takes COCO category
            ``class_map[j]`` (1-based, -1 = none); default map :data:`COCO_TO_YTVIS19_CLASS_MAP`.
        generator: RNG for the re-initialised tensors.

    Returns a new state dict; ``def_detr.backbone.1.temporal_embed`` ``[T, C]`` is drawn from N(0, 1).
    """
    if num_queries % num_frames:
        raise ValueError(f"num_queries {num_queries} must be divisible by num_frames {num_frames}")
    if any(not k.startswith(("def_detr.", "bbox_attention.", "mask_head.")) for k in state_dict):
        state_dict = deformable_detr_to_devis(state_dict)
    if "def_detr.transformer.level_embed" not in state_dict:
        raise KeyError(
            "adapt_coco_to_devis: field 'def_detr.transformer.level_embed' missing from the state dict"
        )
    src = dict(state_dict)
    level_ckpt, hidden = src["def_detr.transformer.level_embed"].shape
    if num_levels > level_ckpt:
        raise ValueError(f"the COCO model has {level_ckpt} levels; cannot build a {num_levels}-level model")
    w_enc = num_frames - 1 if enc_temporal_frames is None else enc_temporal_frames
    out: dict[str, torch.Tensor] = {}

    for k, v in src.items():
        m = _SPATIAL_ATTN.match(k)
        if m is None:
            out[k] = v
            continue
        module, kind = m.group(1), m.group(3)
        is_offsets = kind == "sampling_offsets"
        out[k] = (
            _slice_levels(v, n_heads, level_ckpt, num_levels, is_offsets) if num_levels < level_ckpt else v
        )
        if finetune_temporal_modules:
            enc = ".encoder." in module
            frames, points = (w_enc, enc_points_temporal) if enc else (num_frames - 1, dec_points_temporal)
            out[f"{module}.temporal_{kind}.{m.group(4)}"] = _temporal_from_spatial(
                v, n_heads, level_ckpt, num_levels, frames, points, is_offsets
            )

    if num_levels < level_ckpt:
        out["def_detr.transformer.level_embed"] = src["def_detr.transformer.level_embed"][:num_levels].clone()
        if num_levels == 1:  # the single level is /32: take the COCO /32 projection
            for k in [k for k in src if k.startswith("def_detr.input_proj.2.")]:
                out["def_detr.input_proj.0." + k[len("def_detr.input_proj.2.") :]] = src[k].clone()
        for k in [k for k in out if k.startswith("def_detr.input_proj.")]:
            if int(k.split(".")[2]) >= num_levels:
                del out[k]

    # Queries: per-frame slots of one trajectory; COCO queries have no such structure, so re-draw by default.
    q_key = "def_detr.query_embed.weight"
    nq = num_queries // num_frames
    if finetune_query_embeds and q_key in src:
        coco = src[q_key]
        if coco.shape[0] % nq:
            raise ValueError(f"cannot subsample {coco.shape[0]} COCO queries to {nq} per frame")
        out[q_key] = coco[:: coco.shape[0] // nq][:nq].repeat(num_frames, 1).clone()
    else:
        out[q_key] = torch.randn(num_queries, 2 * hidden, generator=generator)

    class_keys = sorted(k for k in src if k.startswith("def_detr.class_embed."))
    for k in class_keys:
        del out[k]
    if num_classes is not None:
        bound = 1.0 / math.sqrt(hidden)  # nn.Linear's default init
        weight = torch.empty(num_classes, hidden).uniform_(-bound, bound, generator=generator)
        bias = torch.full((num_classes,), -math.log((1 - PRIOR_PROB) / PRIOR_PROB))
        cmap = list(COCO_TO_YTVIS19_CLASS_MAP if class_map is None else class_map)
        for k in class_keys:
            new = (weight if k.endswith("weight") else bias).clone()
            if finetune_class_logits:
                if len(cmap) != num_classes:
                    raise ValueError(f"class_map has {len(cmap)} entries for {num_classes} classes")
                for j, cat in enumerate(cmap):
                    if cat > 0:
                        new[j] = src[k][cat - 1]
            out[k] = new
    out["def_detr.backbone.1.temporal_embed"] = torch.randn(num_frames, hidden, generator=generator)
    for line in describe_stage2(src, out, finetune_query_embeds, finetune_class_logits):
        logger.info("%s", line)
    return out


def _group(keys: Sequence[str]) -> str:
    """Key names summarised by pattern: layer indices become ``*`` and the leaves of one module are joined,
    e.g. ``...layers.*.self_attn.temporal_sampling_offsets.{weight,bias} (x4)`` (at most 4 patterns)."""
    pats: dict[str, list[str]] = {}
    for k in keys:
        module, _, leaf = re.sub(r"\.\d+(?=\.)", ".*", k).rpartition(".")
        pats.setdefault(module, []).append(leaf)
    items = []
    for module, leaves in pats.items():
        names = sorted(set(leaves))
        leaf = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
        items.append(f"{module}.{leaf}" + (f" (x{len(leaves)})" if len(leaves) > 1 else ""))
    return ", ".join(items[:4]) + (f", ... ({len(items) - 4} more)" if len(items) > 4 else "")


def describe_stage2(
    src: Mapping[str, torch.Tensor],
    out: Mapping[str, torch.Tensor],
    finetune_query_embeds: bool = False,
    finetune_class_logits: bool = False,
) -> list[str]:
    """What :func:`adapt_coco_to_devis` did, as log lines: tensors copied as-is, built from the spatial
    attention (temporal projections), sliced (fewer levels), re-initialised, and dropped."""
    same = [k for k, v in out.items() if k in src and v is src[k]]
    temporal = [k for k in out if "_attn.temporal_" in k]
    reinit = []
    q = out.get("def_detr.query_embed.weight")
    if q is not None and not finetune_query_embeds:
        reinit.append(f"def_detr.query_embed.weight {tuple(q.shape)} ~ N(0, 1)")
    cls = sorted(k for k in out if k.startswith("def_detr.class_embed.") and k.endswith(".weight"))
    if cls:
        how = "rows copied through the class map, others" if finetune_class_logits else "all"
        reinit.append(
            f"def_detr.class_embed.* ({len(cls)} layers x {out[cls[0]].shape[0]} classes; {how} re-drawn, "
            f"bias {-math.log((1 - PRIOR_PROB) / PRIOR_PROB):.3f})"
        )
    te = out["def_detr.backbone.1.temporal_embed"]
    reinit.append(f"def_detr.backbone.1.temporal_embed {tuple(te.shape)} ~ N(0, 1)")
    changed = [
        k
        for k in out
        if k not in temporal
        and k not in same
        and "class_embed" not in k
        and "query_embed" not in k
        and not k.endswith("temporal_embed")
    ]
    dropped = [k for k in src if k not in out]
    lines = [f"DeVIS stage 2 from a COCO image model: {len(same)} tensors copied as-is"]
    if temporal:
        lines.append(
            f"  {len(temporal)} temporal projections copied from the spatial ones: {_group(temporal)}"
        )
    else:
        lines.append(
            "  no temporal projections copied (none in the model, or FINETUNE_TEMPORAL_MODULES False)"
        )
    if changed:
        lines.append(f"  {len(changed)} tensors sliced or moved to the model's levels: {_group(changed)}")
    lines.append("  re-initialised: " + "; ".join(reinit))
    if dropped:
        lines.append(f"  {len(dropped)} COCO tensors not used: {_group(dropped)}")
    return lines
