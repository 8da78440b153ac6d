"""``DeformableDETRSegm``: Deformable DETR + DeVIS's multi-scale mask head (the COCO image stage).

Official submodule names: ``def_detr.*``, ``bbox_attention.*``, ``mask_head.*``. The matcher is held too (it
has no parameters): during training the model matches each loss layer itself to know which queries need masks,
as the official code does, and hands the indices to the criterion in ``outputs["indices"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vidseg.models.deformable_detr.detr import DeformableDETR, DetrState
from vidseg.models.devis.clip_matcher import pad_matched_queries
from vidseg.models.devis.mask_head import RES_TO_MEMORY_LEVEL, run_mask_head, select_mask_head_features
from vidseg.models.devis.postprocess import topk_queries
from vidseg.models.devis.targets import image_targets_from_batch
from vidseg.structures.clip_batch import ClipBatch

__all__ = ["DeformableDETRSegm"]


class DeformableDETRSegm(nn.Module):
    """Image instance segmentation: boxes and classes from Deformable DETR, masks for selected queries.

    Args:
        def_detr: the detector.
        bbox_attention / mask_head: ``MultiScaleMHAttentionMap`` / ``MaskHeadConv``
            (``vidseg.models.devis.mask_head``); None for a detection-only model (``MODEL.MASK_ON False``).
        matcher: Hungarian matcher (``vidseg.models.set_prediction.matcher.HungarianMatcher``) that selects
            the training queries.
        mask_aux_loss: aux decoder layers (0-based) that also get masks, e.g. ``(2,)``.
        att_resolutions: memory levels of the attention maps, e.g. ``("/32", "/16", "/8")``.
        used_features: mask-head inputs, e.g. ``(("/32","encoded"), ..., ("/4","backbone"))``.
        num_out: top-k (query, class) pairs whose masks are computed at inference.

    Forward: ``model(frames [B,3,H,W], pad_mask [B,H,W], targets)`` or ``model(batch: ClipBatch)`` with T=1
    frames. ``targets`` are per image ``{"labels" [N], "boxes" [N,4] cxcywh normalised, "masks" [N,H,W]
    bool}``.

    Returns a dict:
        ``pred_logits [B,Q,K]``, ``pred_boxes [B,Q,4]``, ``aux_outputs`` (dicts of the same keys for decoder
        layers 0..L-2). Training (targets given): at the final layer and every aux layer in ``mask_aux_loss``
        additionally ``indices`` (the matcher output, B tuples ``(pred_idx, tgt_idx)``) and ``pred_masks``
        ``[B, N_max, H/4, W/4]`` where row b's first ``len(indices[b][0])`` entries are the masks of
        ``indices[b][0]`` in that order (the rest is padding with unmatched queries). Evaluation: ``topk``
        (``vidseg.models.devis.postprocess.topk_queries``: ``scores``, ``labels``, ``boxes``, ``query_idx``,
        each ``[B, num_out, ...]``) and ``pred_masks [B, num_out, H/4, W/4]`` aligned with it.
    """

    def __init__(
        self,
        def_detr: DeformableDETR,
        bbox_attention: nn.Module | None,
        mask_head: nn.Module | None,
        matcher: nn.Module | None,
        mask_aux_loss: Sequence[int] = (2,),
        att_resolutions: Sequence[str] = ("/32", "/16", "/8"),
        used_features: Sequence[Sequence[str]] = (
            ("/32", "encoded"),
            ("/16", "encoded"),
            ("/8", "encoded"),
            ("/4", "backbone"),
        ),
        num_out: int = 100,
    ):
        super().__init__()
        self.def_detr = def_detr
        self.bbox_attention = bbox_attention
        self.mask_head = mask_head
        self.matcher = matcher
        self.mask_on = mask_head is not None
        num_aux = def_detr.transformer.decoder.num_layers - 1
        bad = [i for i in mask_aux_loss if not 0 <= i < num_aux]
        if self.mask_on and bad:
            raise ValueError(
                f"MODEL.LOSS.MASK_AUX_LOSS: layers {bad} outside the aux layers 0..{num_aux - 1}"
            )
        if self.mask_on and mask_aux_loss and not def_detr.aux_loss:
            raise ValueError("MODEL.LOSS.MASK_AUX_LOSS needs MODEL.LOSS.AUX_LOSS True")
        self.mask_aux_loss = tuple(int(i) for i in mask_aux_loss)
        self.att_resolutions = tuple(att_resolutions)
        self.used_features = tuple(tuple(x) for x in used_features)
        self.num_out = num_out
        strides = (
            [32]
            if def_detr.num_feature_levels == 1
            else [8 * 2**i for i in range(def_detr.num_feature_levels)]
        )
        if self.mask_on and def_detr.num_feature_levels > 1:
            missing = [r for r in self.att_resolutions if int(r[1:]) not in strides]
            if missing:
                raise ValueError(
                    f"MODEL.MASK_HEAD.UPSAMPLING_RESOLUTIONS {missing}: no encoder level (has {strides})"
                )

    # ----------------------------------------------------------------------------------------------- helpers
    def _att_inputs(self, state: DetrState) -> tuple[list[Tensor], list[Tensor]]:
        mem, masks = state.transformer.memories, state.masks
        if len(mem) == 1:  # single /32 level: every attention resolution reads it
            return [mem[0]] * len(self.att_resolutions), [masks[0]] * len(self.att_resolutions)
        lv = [RES_TO_MEMORY_LEVEL[r] for r in self.att_resolutions]
        return [mem[i] for i in lv], [masks[i] for i in lv]

    def _masks_for(self, state: DetrState, layer: int, query_idx: Tensor) -> Tensor:
        """Mask logits ``[B, N, H/4, W/4]`` of queries ``query_idx [B, N]`` using decoder layer ``layer``."""
        hs = state.transformer.hs[layer]
        emb = torch.gather(hs, 1, query_idx.to(hs.device)[..., None].expand(-1, -1, hs.shape[-1]))
        att_mem, att_masks = self._att_inputs(state)
        feats = select_mask_head_features(
            self.used_features, state.features, state.transformer.memories, state.srcs
        )
        return run_mask_head(self.bbox_attention, self.mask_head, emb, att_mem, att_masks, feats)

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self, frames: Tensor | ClipBatch, pad_mask: Tensor | None = None, targets: list[dict] | None = None
    ) -> dict:
        if isinstance(frames, ClipBatch):
            batch = frames
            frames, pad_mask = batch.frames[:, 0], batch.pad_mask[:, 0]
            if batch.frames.shape[1] != 1:
                raise ValueError(
                    f"DeformableDETRSegm is an image model: clips must have T=1, got {batch.num_frames}"
                )
            targets = image_targets_from_batch(batch) if batch.targets is not None and self.training else None
        if pad_mask is None:
            pad_mask = torch.zeros(
                frames.shape[0], *frames.shape[-2:], dtype=torch.bool, device=frames.device
            )
        state = self.def_detr.forward_state(frames, pad_mask)
        out = state.outputs
        if not self.mask_on:
            return out
        if targets is not None and self.training:
            if self.matcher is None:
                raise RuntimeError("DeformableDETRSegm: training with masks needs a matcher")
            num_layers = state.transformer.hs.shape[0]
            for layer in (num_layers - 1, *self.mask_aux_loss):
                out_l = out if layer == num_layers - 1 else out["aux_outputs"][layer]
                indices = self.matcher({k: out_l[k] for k in ("pred_logits", "pred_boxes")}, targets)
                query_idx, _ = pad_matched_queries(indices, out_l["pred_logits"].shape[1])
                out_l["indices"] = indices
                out_l["pred_masks"] = self._masks_for(state, layer, query_idx)
        elif not self.training:
            out["topk"] = topk_queries(out["pred_logits"], out["pred_boxes"], self.num_out)
            out["pred_masks"] = self._masks_for(state, -1, out["topk"]["query_idx"])
        return out
