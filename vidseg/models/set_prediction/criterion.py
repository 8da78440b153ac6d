"""``SetCriterion``: Hungarian-matched set losses of a DETR-family model, composed of loss terms.

``criterion(outputs, targets)`` returns *unweighted* losses; ``weight_dict`` holds their weights and
``weighted_total`` sums ``weight * loss`` over the keys that have a weight.

Keys read from ``outputs`` (one dict per decoder layer: the final layer at the top level, the others in
``outputs["aux_outputs"][i]`` for ``i = 0 .. L-2``, each with the same keys):

- ``"pred_logits"`` ``[B, Q, K]`` (sigmoid classes) or ``[B, Q, K+1]`` (softmax with "no object");
- ``"pred_boxes"`` ``[B, Q, 4]`` normalised cxcywh, for box losses;
- ``"pred_masks"``: mask logits, in the layout the mask term documents;
- ``"indices"`` (optional): this layer's matching, B tuples ``(pred_idx, tgt_idx)`` (images) or
  ``(pred_idx, tgt_idx, valid)`` (clips). When present it is reused instead of re-matching: a model that
  selected mask queries with a matching must hand that matching on.

Keys read from each ``targets[b]``: ``"labels"`` ``[G]`` int64 (``0..K-1``), ``"boxes"`` ``[G, 4]`` normalised
cxcywh, ``"masks"`` ``[G, H, W]`` (only for mask terms).

Returned keys: the keys of each term (``loss_ce``, ``class_error`` (logged, no weight), ``loss_bbox``,
``loss_giou``, ``loss_mask``, ``loss_dice``, ...); for aux layer ``i`` the same with the suffix ``_{i}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["SetCriterion", "LossTerm", "ClipTargetsAdapter", "mean_object_count"]

# ``term(outputs, targets, indices, num_boxes) -> {loss_key: scalar tensor}`` (see .matched_losses).
LossTerm = Callable[..., dict]


def mean_object_count(count: float, device: torch.device | str = "cpu") -> float:
    """The loss normaliser: this rank's object count averaged over ranks, clamped to >= 1.

    Every rank then divides by the same number, so the DDP-averaged gradient equals the single-process one.
    """
    n = torch.as_tensor([float(count)], dtype=torch.float64, device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl" and n.device.type != "cuda":
            n = n.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(n)
        world = dist.get_world_size()
    return max(float(n.item()) / world, 1.0)


class SetCriterion(nn.Module):
    """Matches each layer (or reuses its ``indices``) and calls its loss terms; see the module docstring.

    Args:
        matcher: ``(outputs, targets) -> indices``, for every layer whose outputs have no ``"indices"``.
        weight_dict: loss key -> weight.
        losses: term name -> term, called in this order (DETR's ``loss_<name>``), e.g.
            ``{"labels": FocalLabelLoss(K), "boxes": BoxLoss(), "masks": FocalDiceMaskLoss()}``.
        aux_losses: aux layer index -> the names of the terms computed there; None computes every term.
        required: outputs keys checked at the top level before anything runs (clear errors).
    """

    def __init__(
        self,
        matcher: Callable,
        weight_dict: Mapping[str, float],
        losses: Mapping[str, LossTerm],
        aux_losses: Callable[[int], Sequence[str]] | None = None,
        required: Sequence[str] = ("pred_logits",),
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.terms = dict(losses)
        self.aux_losses = aux_losses
        self.required = tuple(required)

    @property
    def losses(self) -> list[str]:
        """The term names, in call order."""
        return list(self.terms)

    def get_num_boxes(self, targets: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> float:
        """Number of target objects, averaged over ranks, clamped to >= 1 (:func:`mean_object_count`)."""
        return mean_object_count(sum(len(t["labels"]) for t in targets), device)

    def layer_losses(
        self, out: Mapping, targets, num_boxes: float, names: Sequence[str], layer: str = "the final layer"
    ) -> dict:
        """The losses ``names`` of one layer's outputs (no suffix).

        A term's ``needs`` attribute (outputs keys) is checked first, so that a missing key is named with its
        layer.
        """
        for name in names:
            for key in getattr(self.terms[name], "needs", ()):
                if key not in out:
                    raise KeyError(f"SetCriterion: {layer} has no {key!r}, which the {name!r} loss needs")
        indices = out["indices"] if "indices" in out else self.matcher(out, targets)
        losses: dict[str, torch.Tensor] = {}
        for name in names:
            losses.update(self.terms[name](out, targets, indices, num_boxes))
        return losses

    def forward(
        self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses of the final layer and the aux layers (keys in the module docstring)."""
        for key in self.required:
            if key not in outputs:
                raise KeyError(f"SetCriterion: outputs has no {key!r} (keys: {sorted(outputs)})")
        logits = outputs["pred_logits"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"SetCriterion: {len(targets)} targets for a batch of {logits.shape[0]}")
        num_boxes = self.get_num_boxes(targets, logits.device)
        losses = self.layer_losses(outputs, targets, num_boxes, self.losses)
        for i, aux in enumerate(outputs.get("aux_outputs", []) or []):
            names = self.losses if self.aux_losses is None else list(self.aux_losses(i))
            if not names:
                continue
            layer = self.layer_losses(aux, targets, num_boxes, names, f"aux layer {i}")
            losses.update({f"{k}_{i}": v for k, v in layer.items() if not k.startswith("class_error")})
        return losses

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum(weight_dict[k] * losses[k])`` over the losses that have a weight."""
        terms = [losses[k] * w for k, w in self.weight_dict.items() if k in losses]
        if not terms:
            raise ValueError(f"SetCriterion: no loss has a weight (losses {sorted(losses)})")
        return torch.stack(terms).sum()


class ClipTargetsAdapter(nn.Module):
    """Lets the engine call a set criterion with the data pipeline's ``ClipTargets``.

    Each ``ClipTargets`` becomes the target dicts the criterion reads, through ``convert`` (one dict per clip
    for DeVIS, one per image or frame for the image stage and Mask2Former); plain dicts pass through.
    ``weight_dict`` is the wrapped criterion's.
    """

    def __init__(self, criterion: nn.Module, convert: Callable[[Any], list[dict]]) -> None:
        super().__init__()
        self.criterion = criterion
        self.convert = convert

    @property
    def weight_dict(self) -> dict[str, float]:
        return self.criterion.weight_dict

    def forward(self, outputs: Mapping, targets: Sequence[Any]) -> dict[str, torch.Tensor]:
        from vidseg.structures.clip_batch import ClipTargets

        conv: list = []
        for t in targets:
            conv.extend(self.convert(t) if isinstance(t, ClipTargets) else [t])
        return self.criterion(outputs, conv)

