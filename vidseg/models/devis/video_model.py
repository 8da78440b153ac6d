"""``DeVIS``: the video model (devis.md §2): Deformable DETR over a clip with temporal deformable attention,
instance-aware queries and the image stage's mask head applied per frame.

Official submodule names, so official checkpoints load by name: ``def_detr.*`` (with
``def_detr.backbone.1.temporal_embed``), ``bbox_attention.*``, ``mask_head.*`` and, for the VisTR-style
ablations, ``conv_head_3d.{0,1,3,4,6,7,9}.*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vidseg.models.deformable_detr.detr import DeformableDETR, DetrState
from vidseg.models.devis.clip_postprocess import clip_topk
from vidseg.models.devis.clip_targets import clip_targets
from vidseg.models.devis.mask_head import RES_TO_MEMORY_LEVEL, select_mask_head_features
from vidseg.structures.clip_batch import ClipBatch

__all__ = ["DeVIS", "conv_head_3d"]


def conv_head_3d(in_channels: int = 16) -> nn.Sequential:
    """VisTR-style 3-d conv head of the ablations, indexed 0..9 as officially: 3 x (Conv3d k3 dilation 2,
    GroupNorm(4, 12), ReLU), then Conv3d(12 -> 1, k1); ``[N, C, T, H/4, W/4]`` -> ``[N, 1, T, H/4, W/4]``."""
    mods: list[nn.Module] = []
    c = in_channels
    for _ in range(3):
        mods += [nn.Conv3d(c, 12, 3, padding=2, dilation=2), nn.GroupNorm(4, 12), nn.ReLU()]
        c = 12
    mods.append(nn.Conv3d(12, 1, 1))
    return nn.Sequential(*mods)


class DeVIS(nn.Module):
    """DeVIS on clips of T frames (batch = clips; each clip is one pass, its frames the backbone batch).

    Args:
        def_detr: the detector built in clip mode (``clip_queries``), with ``T * Nq`` queries (frame-major:
            query ``t * Nq + i`` is slot ``i`` of frame ``t``; slot ``i`` over the frames is one trajectory),
            temporal attention in its layers and the temporal position encoding at ``backbone.1``.
        bbox_attention / mask_head: the image stage's ``MultiScaleMHAttentionMap`` / ``MaskHeadConv``, run
            per frame on the selected slots; with ``conv_head_3d`` the mask head has no ``out_lay``.
        matcher: :class:`~vidseg.models.devis.clip_matcher.ClipHungarianMatcher`; during training the
            matched slots of the final layer and of ``mask_aux_loss`` layers get masks.
        num_frames: T.
        conv_head_3d: the ablations' 3-d conv head (None: the mask head's own ``out_lay``).
        mask_aux_loss, att_resolutions, used_features: as for the image stage.
        num_out: top-k (trajectory, class) pairs per clip at inference.
        stage2_init: keyword arguments of :func:`vidseg.checkpoints.adapt_coco_to_devis` (heads, encoder
            window, ``SOLVER.DEVIS.FINETUNE_*``) used when COCO image weights are loaded into this model.

    Forward: ``model(batch: ClipBatch)`` with frames ``[B, T, 3, H, W]`` (targets converted by
    :func:`~vidseg.models.devis.clip_targets.clip_targets` while training), or
    ``model(frames [T, 3, H, W], pad_mask [T, H, W], targets)`` for one clip.

    Returns:
        ``pred_logits [B, T*Nq, K]``, ``pred_boxes [B, T*Nq, 4]``, ``aux_outputs`` (layers 0..L-2). Training:
        at the final layer and each ``mask_aux_loss`` layer also ``indices`` (the clip matching, B tuples
        ``(pred_idx, tgt_idx, valid)``) and ``pred_masks [B, N_max*T, H/4, W/4]``: row b's first
        ``len(indices[b][0])`` entries are the masks of ``pred_idx`` (entry ``j*T + t`` = matched slot j in
        frame t). Evaluation: ``clip_topk`` (per clip, see
        :func:`~vidseg.models.devis.clip_postprocess.clip_topk`) and ``pred_masks`` (per clip
        ``[k, T, H/4, W/4]`` aligned with it), both lists of length B.
    """

    def __init__(
        self,
        def_detr: DeformableDETR,
        bbox_attention: nn.Module,
        mask_head: nn.Module,
        matcher: nn.Module | None,
        num_frames: int,
        conv_head_3d: nn.Module | None = None,
        mask_aux_loss: Sequence[int] = (2,),
        att_resolutions: Sequence[str] = ("/32", "/16", "/8"),
        used_features: Sequence[Sequence[str]] = (
            ("/32", "encoded"),
            ("/16", "encoded"),
            ("/8", "encoded"),
            ("/4", "backbone"),
        ),
        num_out: int = 20,
        stage2_init: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if def_detr.num_queries % num_frames:
            raise ValueError(
                f"MODEL.NUM_QUERIES {def_detr.num_queries} must be divisible by MODEL.DEVIS.NUM_FRAMES "
                f"{num_frames} (it counts the queries of all frames)"
            )
        if not def_detr.transformer.clip_queries:
            raise ValueError("DeVIS needs a transformer built with clip_queries=True")
        num_aux = def_detr.transformer.decoder.num_layers - 1
        bad = [i for i in mask_aux_loss if not 0 <= i < num_aux]
        if bad:
            raise ValueError(
                f"MODEL.LOSS.MASK_AUX_LOSS: layers {bad} outside the aux layers 0..{num_aux - 1}"
            )
        if mask_aux_loss and not def_detr.aux_loss:
            raise ValueError("MODEL.LOSS.MASK_AUX_LOSS needs MODEL.LOSS.AUX_LOSS True")
        self.def_detr = def_detr
        self.bbox_attention = bbox_attention
        self.mask_head = mask_head
        self.conv_head_3d = conv_head_3d
        self.matcher = matcher
        self.num_frames = num_frames
        self.num_slots = def_detr.num_queries // num_frames
        self.mask_aux_loss = tuple(int(i) for i in mask_aux_loss)
        self.att_resolutions = tuple(att_resolutions)
        self.used_features = tuple(tuple(x) for x in used_features)
        self.num_out = num_out
        # Options of the stage-2 adaptation when MODEL.WEIGHTS is a COCO image model
        # (vidseg.checkpoints.adapt_coco_to_devis keyword arguments; read by vidseg.checkpoints.load_weights).
        self.stage2_init = dict(stage2_init or {})

    # ----------------------------------------------------------------------------------------------- masks
    def _att_inputs(self, state: DetrState) -> tuple[list[Tensor], list[Tensor]]:
        mem, masks = state.transformer.memories, state.masks
        if len(mem) == 1:  # single /32 level: every attention resolution reads it
            return [mem[0]] * len(self.att_resolutions), [masks[0]] * len(self.att_resolutions)
        lv = [RES_TO_MEMORY_LEVEL[r] for r in self.att_resolutions]
        return [mem[i] for i in lv], [masks[i] for i in lv]

    def mask_logits(self, state: DetrState, layer: int, slots: Tensor) -> Tensor:
        """Mask logits ``[N, T, H/4, W/4]`` of trajectories ``slots [N]`` from decoder layer ``layer``.

        The slot embeddings ``[T, N, C]`` go through the mask head with the frames as its batch; the 3-d
        head (ablations) then convolves each trajectory over time.
        """
        hs = state.transformer.hs[layer][0]  # [T*Nq, C]
        emb = hs.view(self.num_frames, self.num_slots, -1)[:, slots.to(hs.device)]  # [T, N, C]
        att_mem, att_masks = self._att_inputs(state)
        feats = select_mask_head_features(
            self.used_features, state.features, state.transformer.memories, state.srcs
        )
        x = self.mask_head(feats, self.bbox_attention(emb, att_mem, att_masks))
        if self.conv_head_3d is None:
            return x.transpose(0, 1)  # [T, N, h, w] -> [N, T, h, w]
        return self.conv_head_3d(x.permute(1, 2, 0, 3, 4))[:, 0]  # [T, N, C', h, w] -> [N, T, h, w]

    # ----------------------------------------------------------------------------------------------- forward
    def forward_clip(
        self, frames: Tensor, pad_mask: Tensor | None = None, target: dict | None = None, num_valid: int = 0
    ) -> dict:
        """One clip: frames ``[T, 3, H, W]``, pad_mask ``[T, H, W]``; ``target`` from
        :func:`~vidseg.models.devis.clip_targets.clip_targets` (training). Outputs have batch 1; training
        layers carry ``indices`` (a list of one tuple) and ``pred_masks [N*T, H/4, W/4]``."""
        if frames.shape[0] != self.num_frames:
            raise ValueError(
                f"DeVIS was built for clips of T={self.num_frames} frames (MODEL.DEVIS.NUM_FRAMES), "
                f"got {frames.shape[0]}"
            )
        if pad_mask is None:
            pad_mask = torch.zeros(
                frames.shape[0], *frames.shape[-2:], dtype=torch.bool, device=frames.device
            )
        state = self.def_detr.forward_state(frames, pad_mask)
        out = state.outputs
        num_layers = state.transformer.hs.shape[0]
        if self.training and target is not None:
            if self.matcher is None:
                raise RuntimeError("DeVIS: training needs a matcher")
            for layer in (num_layers - 1, *self.mask_aux_loss):
                out_l = out if layer == num_layers - 1 else out["aux_outputs"][layer]
                (idx,) = self.matcher({k: out_l[k] for k in ("pred_logits", "pred_boxes")}, [target])
                slots = idx[0].view(-1, self.num_frames)[:, 0] % self.num_slots  # [N], j*T + t order
                out_l["indices"] = [idx]
                out_l["pred_masks"] = self.mask_logits(state, layer, slots).flatten(0, 1)
        elif not self.training:
            top = clip_topk(
                out["pred_logits"][0], out["pred_boxes"][0], self.num_frames, self.num_out, num_valid or None
            )
            uniq, inverse = torch.unique(top["slots"], return_inverse=True)
            out["clip_topk"] = top
            out["pred_masks"] = self.mask_logits(state, -1, uniq)[inverse]
        return out

    def forward(
        self, frames: Tensor | ClipBatch, pad_mask: Tensor | None = None, targets: list | None = None
    ) -> dict:
        meta: list[dict] = []
        if isinstance(frames, ClipBatch):
            batch = frames
            frames, pad_mask, meta = batch.frames, batch.pad_mask, batch.meta or []
            targets = [clip_targets(t) for t in batch.targets] if batch.targets is not None else None
        elif frames.dim() == 4:
            frames = frames[None]
            pad_mask = None if pad_mask is None else pad_mask[None]
            targets = None if targets is None else [targets]
        outs = []
        for b in range(frames.shape[0]):
            tgt = targets[b] if targets is not None and self.training else None
            nv = int(meta[b].get("num_valid_frames", 0)) if b < len(meta) else 0
            outs.append(self.forward_clip(frames[b], None if pad_mask is None else pad_mask[b], tgt, nv))
        return _merge_clips(outs)


def _merge_layer(layers: list[dict]) -> dict:
    out = {k: torch.cat([o[k] for o in layers]) for k in ("pred_logits", "pred_boxes")}
    if "indices" in layers[0]:
        out["indices"] = [i for o in layers for i in o["indices"]]
        masks = [o["pred_masks"] for o in layers]
        n = max(m.shape[0] for m in masks)
        padded = masks[0].new_zeros(len(masks), n, *masks[0].shape[-2:])
        for b, m in enumerate(masks):
            padded[b, : m.shape[0]] = m
        out["pred_masks"] = padded
    return out


def _merge_clips(outs: list[dict]) -> dict:
    """Per-clip outputs (batch 1 each) -> one batch; see :class:`DeVIS` for the keys."""
    merged = _merge_layer(outs)
    if "aux_outputs" in outs[0]:
        merged["aux_outputs"] = [
            _merge_layer([o["aux_outputs"][i] for o in outs]) for i in range(len(outs[0]["aux_outputs"]))
        ]
    if "clip_topk" in outs[0]:
        merged["clip_topk"] = [o["clip_topk"] for o in outs]
        merged["pred_masks"] = [o["pred_masks"] for o in outs]
    return merged
