"""Set criterion (DETR style, sigmoid focal classification) for Deformable DETR, its mask head and DeVIS.

``SetCriterion.forward(outputs, targets)`` returns *unweighted* losses; ``weight_dict`` holds their weights
and
``SetCriterion.weighted_total`` sums ``weight * loss`` over the keys that have a weight.

Keys read from ``outputs`` (one dict per decoder layer; the final layer at the top level, the others in
``outputs["aux_outputs"][i]`` for ``i = 0 .. L-2``, each with the same keys):

- ``"pred_logits"`` ``[B, Q, K]``: class logits (focal loss, no background column).
- ``"pred_boxes"`` ``[B, Q, 4]``: normalised cxcywh boxes.
- ``"indices"`` (optional): the matching of this layer as B tuples ``(pred_idx, tgt_idx)`` (image) or
  ``(pred_idx, tgt_idx, valid)`` (clips, ``valid`` bool per pair). When present it is reused instead of
  re-matching — the model must store it whenever it selected mask queries with it.
- ``"pred_masks"`` (final layer, and the aux layers in ``mask_aux_layers``): mask logits of the matched
queries,
  ``[B, N_sel, h, w]`` where, for image ``b``, ``pred_masks[b, j]`` is the mask of query ``indices[b][0][j]``
  for ``j < len(indices[b][0])``; entries beyond that are padding and ignored (see
  ``vidseg.models.matcher.pad_matched_queries``). A flat ``[M, h, w]`` tensor with the masks of all matched
  pairs
  in the concatenated order of ``indices`` is accepted too. ``h, w`` are typically ``H/4, W/4`` of the padded
  input; logits are bilinearly upsampled to the target mask size.

Keys read from each ``targets[b]``: ``"labels"`` ``[G]`` int64 (``0..K-1``), ``"boxes"`` ``[G, 4]`` normalised
cxcywh, ``"masks"`` ``[G, H, W]`` (bool/float, at the padded input size; only with the ``"masks"`` loss).

Returned keys: ``loss_ce``, ``class_error`` (logged only, no weight), ``loss_bbox``, ``loss_giou``,
``loss_mask``,
``loss_dice``; for aux layer ``i`` the same with the suffix ``_{i}`` (mask losses only at
``mask_aux_layers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vidseg.models.losses import box_giou_loss, box_l1_loss, dice_loss, focal_class_loss, sigmoid_focal_loss

__all__ = ["SetCriterion", "AUX_LOSS_WEIGHTING_COEF", "build_weight_dict", "build_criterion"]

# DeVIS "aux. loss weighting" (devis.md §3.5): class/box/giou weights of decoder layer l (0-based; 5 = final)
# are multiplied by these coefficients. Deeper layers count more; the final layer gets half of the total.
AUX_LOSS_WEIGHTING_COEF: dict[int, float] = {
    0: 1 / 30,
    1: 2 / 30,
    2: 3 / 30,
    3: 4 / 30,
    4: 5 / 30,
    5: 15 / 30,
}

_KNOWN_LOSSES = ("labels", "boxes", "masks")


def build_weight_dict(
    *,
    class_coef: float,
    bbox_coef: float,
    giou_coef: float,
    mask_coef: float = 1.0,
    dice_coef: float = 1.0,
    num_decoder_layers: int = 6,
    aux_loss: bool = True,
    aux_loss_weighting: bool = False,
    mask_on: bool = True,
    mask_aux_layers: Iterable[int] = (2,),
) -> dict[str, float]:
    """The loss weights of DeVIS ``build_criterion``.

    Aux layers ``0 .. num_decoder_layers-2`` get ``loss_{ce,bbox,giou}_{i}`` with the base weights, or with
    ``AUX_LOSS_WEIGHTING_COEF[i]`` times the base weights (the final layer then uses ``COEF[5]``). Mask and
    dice
    weights are never re-weighted; ``loss_{mask,dice}_{i}`` exist for ``i`` in ``mask_aux_layers``.
    """
    base = {"loss_ce": class_coef, "loss_bbox": bbox_coef, "loss_giou": giou_coef}
    if aux_loss_weighting and num_decoder_layers != 6:
        raise ValueError(
            f"MODEL.LOSS.AUX_LOSS_WEIGHTING needs 6 decoder layers, got {num_decoder_layers} "
            "(MODEL.TRANSFORMER.DECODER_LAYERS)"
        )
    final_coef = AUX_LOSS_WEIGHTING_COEF[5] if aux_loss_weighting else 1.0
    weights = {k: v * final_coef for k, v in base.items()}
    if aux_loss:
        for i in range(num_decoder_layers - 1):
            coef = AUX_LOSS_WEIGHTING_COEF[i] if aux_loss_weighting else 1.0
            weights.update({f"{k}_{i}": v * coef for k, v in base.items()})
    if mask_on:
        weights["loss_mask"] = mask_coef
        weights["loss_dice"] = dice_coef
        for i in mask_aux_layers:
            weights[f"loss_mask_{i}"] = mask_coef
            weights[f"loss_dice_{i}"] = dice_coef
    return weights


class SetCriterion(nn.Module):
    """Hungarian-matched set losses; see the module docstring for the exact input/output keys.

    Args:
        num_classes: K (no background class).
        matcher: callable ``(outputs, targets) -> indices`` (e.g. ``HungarianMatcher``), used for every layer
            whose output dict has no ``"indices"``.
        weight_dict: loss name -> weight (see ``build_weight_dict``).
        losses: subset of ``("labels", "boxes", "masks")``.
        focal_alpha, focal_gamma: focal-loss parameters (class and mask losses).
        mask_aux_layers: aux layers (0-based index into ``aux_outputs``) that also get mask losses.
        aux_loss: compute class/box losses for the aux layers.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Mapping[str, float],
        losses: Sequence[str] = ("labels", "boxes", "masks"),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_aux_layers: Iterable[int] = (2,),
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        unknown = [name for name in losses if name not in _KNOWN_LOSSES]
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}; known: {list(_KNOWN_LOSSES)}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.losses = list(losses)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_aux_layers = tuple(int(i) for i in mask_aux_layers)
        self.aux_loss = aux_loss

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _flatten_indices(indices, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Concatenate per-image indices -> (batch_idx, src_idx, tgt_idx, valid, pos_in_image), all
        ``[M]``."""
        batch, src, tgt, valid, pos = [], [], [], [], []
        for b, idx in enumerate(indices):
            s, t = idx[0].to(device), idx[1].to(device)
            v = idx[2].to(device).bool() if len(idx) > 2 else torch.ones_like(s, dtype=torch.bool)
            batch.append(torch.full_like(s, b))
            src.append(s)
            tgt.append(t)
            valid.append(v)
            pos.append(torch.arange(s.numel(), device=device))
        if not batch:
            e = torch.empty(0, dtype=torch.int64, device=device)
            return e, e, e, e.bool(), e
        return tuple(torch.cat(x) for x in (batch, src, tgt, valid, pos))

    @staticmethod
    def _supervised_pairs(indices, batch_idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Pairs that get box/mask losses: all pairs of images with at least one valid pair (DeVIS
        supervises the
        invalid frames of a visible instance too, with tiny boxes and empty masks), ``[M]`` bool."""
        any_valid = torch.zeros(len(indices), dtype=torch.bool, device=valid.device)
        if valid.numel():
            any_valid.index_put_((batch_idx,), valid, accumulate=True)
        return any_valid[batch_idx]

    # ------------------------------------------------------------------------------------------ losses
    def loss_labels(self, outputs, targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        """``loss_ce``: focal loss over all queries x classes; positives at valid matched pairs."""
        logits = outputs["pred_logits"]
        batch_idx, src_idx, tgt_idx, valid, _ = self._flatten_indices(indices, logits.device)
        batch_idx, src_idx, tgt_idx = batch_idx[valid], src_idx[valid], tgt_idx[valid]
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        matched_labels = torch.cat([t["labels"] for t in targets]).to(logits.device) if targets else None
        offsets = _target_offsets(targets, logits.device)
        if src_idx.numel():
            labels = matched_labels[offsets[batch_idx] + tgt_idx]
            target_classes[batch_idx, src_idx] = labels
        loss = focal_class_loss(logits, target_classes, num_boxes, self.focal_alpha, self.focal_gamma)
        with torch.no_grad():
            if src_idx.numel():
                correct = (logits[batch_idx, src_idx].argmax(-1) == labels).float().mean()
                class_error = 100.0 * (1.0 - correct)
            else:
                class_error = torch.tensor(100.0, device=logits.device)
        return {"loss_ce": loss, "class_error": class_error}

    def loss_boxes(self, outputs, targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        """``loss_bbox`` (L1) and ``loss_giou`` over matched pairs (see ``_supervised_pairs``)."""
        boxes = outputs["pred_boxes"]
        batch_idx, src_idx, tgt_idx, valid, _ = self._flatten_indices(indices, boxes.device)
        keep = self._supervised_pairs(indices, batch_idx, valid)
        batch_idx, src_idx, tgt_idx = batch_idx[keep], src_idx[keep], tgt_idx[keep]
        if src_idx.numel() == 0:
            zero = boxes.sum() * 0.0  # keeps the graph connected (DDP) while contributing nothing
            return {"loss_bbox": zero, "loss_giou": zero}
        all_tgt = torch.cat([t["boxes"] for t in targets]).to(boxes)
        tgt = all_tgt[_target_offsets(targets, boxes.device)[batch_idx] + tgt_idx]
        src = boxes[batch_idx, src_idx]
        return {
            "loss_bbox": box_l1_loss(src, tgt, num_boxes),
            "loss_giou": box_giou_loss(src, tgt, num_boxes),
        }

    def loss_masks(self, outputs, targets, indices, num_boxes: float) -> dict[str, torch.Tensor]:
        """``loss_mask`` (focal, mean over pixels) and ``loss_dice`` of matched pairs at the target
        resolution."""
        pred = outputs["pred_masks"]
        batch_idx, _, tgt_idx, valid, pos = self._flatten_indices(indices, pred.device)
        keep = self._supervised_pairs(indices, batch_idx, valid)
        if pred.dim() == 4:
            counts = [int(idx[0].numel()) for idx in indices]
            if pred.shape[0] != len(indices) or pred.shape[1] < max([0, *counts]):
                raise ValueError(
                    f"SetCriterion: 'pred_masks' has shape {tuple(pred.shape)}; expected [B={len(indices)}, "
                    f"N_sel>={max([0, *counts])}, h, w] (matched queries first, in the order of 'indices')"
                )
            src = pred[batch_idx, pos]
        elif pred.dim() == 3:
            if pred.shape[0] != batch_idx.numel():
                raise ValueError(
                    f"SetCriterion: flat 'pred_masks' {tuple(pred.shape)} needs one mask per matched pair "
                    f"({batch_idx.numel()})"
                )
            src = pred
        else:
            raise ValueError(f"SetCriterion: 'pred_masks' must be 3-d or 4-d, got {tuple(pred.shape)}")
        src, batch_idx, tgt_idx = src[keep], batch_idx[keep], tgt_idx[keep]
        if src.shape[0] == 0:
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        tgt_masks = _padded_target_masks(targets, batch_idx, tgt_idx, pred.device).to(src.dtype)
        src = F.interpolate(src.unsqueeze(1), size=tgt_masks.shape[-2:], mode="bilinear", align_corners=False)
        src, tgt_masks = src.flatten(1), tgt_masks.flatten(1)
        return {
            "loss_mask": sigmoid_focal_loss(src, tgt_masks, num_boxes, self.focal_alpha, self.focal_gamma),
            "loss_dice": dice_loss(src, tgt_masks, num_boxes),
        }

    # ------------------------------------------------------------------------------------------ forward
    def get_num_boxes(self, targets: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> float:
        """Number of target objects, averaged over ranks, clamped to >= 1."""
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            world = dist.get_world_size()
        return max(float(n.item()) / world, 1.0)

    def _layer_losses(self, out, targets, num_boxes: float, with_masks: bool, with_boxes: bool) -> dict:
        indices = out["indices"] if "indices" in out else self.matcher(out, targets)
        losses: dict[str, torch.Tensor] = {}
        if with_boxes and "labels" in self.losses:
            losses.update(self.loss_labels(out, targets, indices, num_boxes))
        if with_boxes and "boxes" in self.losses:
            losses.update(self.loss_boxes(out, targets, indices, num_boxes))
        if with_masks:
            losses.update(self.loss_masks(out, targets, indices, num_boxes))
        return losses

    def forward(
        self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses of the final layer and the aux layers (keys in the module docstring)."""
        for key in ("pred_logits", "pred_boxes"):
            if key not in outputs:
                raise KeyError(f"SetCriterion: outputs has no {key!r} (keys: {sorted(outputs)})")
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"SetCriterion: {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]}"
            )
        masks_on = "masks" in self.losses
        if masks_on and "pred_masks" not in outputs:
            raise KeyError("SetCriterion: the 'masks' loss needs outputs['pred_masks'] (final layer)")
        num_boxes = self.get_num_boxes(targets, outputs["pred_logits"].device)

        losses = self._layer_losses(outputs, targets, num_boxes, with_masks=masks_on, with_boxes=True)
        for i, aux in enumerate(outputs.get("aux_outputs", []) or []):
            aux_masks = masks_on and i in self.mask_aux_layers
            if aux_masks and "pred_masks" not in aux:
                raise KeyError(
                    f"SetCriterion: aux layer {i} is in mask_aux_layers {self.mask_aux_layers} "
                    "(MODEL.LOSS.MASK_AUX_LOSS) but outputs['aux_outputs'][{i}] has no 'pred_masks'"
                )
            if not (self.aux_loss or aux_masks):
                continue
            layer = self._layer_losses(
                aux, targets, num_boxes, with_masks=aux_masks, with_boxes=self.aux_loss
            )
            losses.update({f"{k}_{i}": v for k, v in layer.items() if not k.startswith("class_error")})
        return losses

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum(weight_dict[k] * losses[k])`` over the losses that have a weight."""
        terms = [losses[k] * w for k, w in self.weight_dict.items() if k in losses]
        if not terms:
            raise ValueError(f"SetCriterion: no loss has a weight (losses {sorted(losses)})")
        return torch.stack(terms).sum()


def _target_offsets(targets: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Start of each image's targets in the concatenation of all targets, ``[B]`` int64."""
    sizes = torch.as_tensor([len(t["labels"]) for t in targets], dtype=torch.int64, device=device)
    return torch.cumsum(sizes, 0) - sizes


def _padded_target_masks(targets, batch_idx: torch.Tensor, tgt_idx: torch.Tensor, device) -> torch.Tensor:
    """The selected target masks, zero-padded (bottom/right) to the largest mask size of the batch, ``[M,
    H, W]``."""
    sizes = [tuple(t["masks"].shape[-2:]) for t in targets if "masks" in t]
    if len(sizes) != len(targets):
        raise KeyError("SetCriterion: the 'masks' loss needs targets[b]['masks'] for every image")
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    out = torch.zeros((batch_idx.numel(), h, w), dtype=torch.float32, device=device)
    for b in torch.unique(batch_idx).tolist():
        sel = (batch_idx == b).nonzero().flatten()
        m = targets[b]["masks"]
        out[sel, : m.shape[-2], : m.shape[-1]] = m[tgt_idx[sel].to(m.device)].to(
            device=device, dtype=out.dtype
        )
    return out


def build_criterion(cfg, num_classes: int, matcher: nn.Module | None = None) -> SetCriterion:
    """``SetCriterion`` from ``MODEL.LOSS.*``, ``MODEL.MASK_ON`` and ``MODEL.TRANSFORMER.DECODER_LAYERS``.

    ``num_classes`` comes from the dataset metadata; ``matcher`` defaults to ``build_matcher(cfg)``.
    """
    from vidseg.models.matcher import build_matcher

    loss = cfg.MODEL.LOSS
    if not loss.FOCAL_LOSS:
        raise ValueError(
            "MODEL.LOSS.FOCAL_LOSS False: only the sigmoid focal classification loss is implemented"
        )
    num_dec = int(cfg.MODEL.TRANSFORMER.DECODER_LAYERS)
    mask_on = bool(cfg.MODEL.MASK_ON)
    mask_aux = [int(i) for i in loss.MASK_AUX_LOSS] if mask_on else []
    bad = [i for i in mask_aux if not 0 <= i < num_dec - 1]
    if bad:
        raise ValueError(f"MODEL.LOSS.MASK_AUX_LOSS: layers {bad} outside the aux layers 0..{num_dec - 2}")
    weight_dict = build_weight_dict(
        class_coef=float(loss.CLASS_COEF),
        bbox_coef=float(loss.BBX_L1_COEF),
        giou_coef=float(loss.BBX_GIOU_COEF),
        mask_coef=float(loss.SEGM_MASK_COEF),
        dice_coef=float(loss.SEGM_DICE_COEF),
        num_decoder_layers=num_dec,
        aux_loss=bool(loss.AUX_LOSS),
        aux_loss_weighting=bool(loss.AUX_LOSS_WEIGHTING),
        mask_on=mask_on,
        mask_aux_layers=mask_aux,
    )
    losses = ["labels", "boxes"] + (["masks"] if mask_on else [])
    return SetCriterion(
        num_classes=num_classes,
        matcher=matcher if matcher is not None else build_matcher(cfg),
        weight_dict=weight_dict,
        losses=losses,
        focal_alpha=float(loss.FOCAL_ALPHA),
        mask_aux_layers=mask_aux,
        aux_loss=bool(loss.AUX_LOSS),
    )
