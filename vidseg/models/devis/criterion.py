"""DeVIS's set criterion: focal classes, boxes and full-resolution masks, with its aux-layer weighting.

:func:`build_weight_dict` gives the loss weights of DeVIS's ``build_criterion`` (devis.md §3.5), and
:func:`focal_set_criterion` composes the shared :class:`SetCriterion` with the loss terms the image stage and
the video model use. The image stage and the video model differ only in their matcher (per image or per clip).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vidseg.models.set_prediction.criterion import SetCriterion
from vidseg.models.set_prediction.matched_losses import BoxLoss, FocalDiceMaskLoss, FocalLabelLoss

__all__ = ["AUX_LOSS_WEIGHTING_COEF", "build_weight_dict", "focal_set_criterion"]

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
    dice weights are never re-weighted; ``loss_{mask,dice}_{i}`` exist for ``i`` in ``mask_aux_layers``.
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


def focal_set_criterion(
    num_classes: int,
    matcher,
    weight_dict: Mapping[str, float],
    losses: Sequence[str] = ("labels", "boxes", "masks"),
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    mask_aux_layers: Iterable[int] = (2,),
    aux_loss: bool = True,
) -> SetCriterion:
    """The DeVIS criterion (image stage and video model).

    Args:
        num_classes: K (no background class: sigmoid focal loss).
        matcher: ``HungarianMatcher`` (images) or ``ClipHungarianMatcher`` (clips), used for every layer whose
            outputs carry no ``"indices"``.
        weight_dict: see :func:`build_weight_dict`.
        losses: subset of ``("labels", "boxes", "masks")``.
        focal_alpha, focal_gamma: focal-loss parameters (class and mask losses).
        mask_aux_layers: aux layers (0-based index into ``aux_outputs``) that also get mask losses.
        aux_loss: class/box losses on the aux layers.
    """
    unknown = [name for name in losses if name not in _KNOWN_LOSSES]
    if unknown:
        raise ValueError(f"SetCriterion: unknown losses {unknown}; known: {list(_KNOWN_LOSSES)}")
    terms = {
        "labels": FocalLabelLoss(num_classes, focal_alpha, focal_gamma),
        "boxes": BoxLoss(),
        "masks": FocalDiceMaskLoss(focal_alpha, focal_gamma),
    }
    names = [n for n in _KNOWN_LOSSES if n in losses]
    mask_aux = tuple(int(i) for i in mask_aux_layers)

    def aux_losses(i: int) -> list[str]:
        box_terms = [n for n in names if n != "masks"] if aux_loss else []
        return box_terms + (["masks"] if "masks" in names and i in mask_aux else [])

    return SetCriterion(
        matcher,
        weight_dict,
        {n: terms[n] for n in names},
        aux_losses=aux_losses,
        required=("pred_logits", "pred_boxes"),
    )
