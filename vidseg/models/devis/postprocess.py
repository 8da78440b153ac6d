"""Image post-processing (Deformable DETR + mask head) to COCO-style instances.

``ImagePostProcessor`` takes the raw model outputs of a batch and returns, per image, the top-k (query, class)
pairs with absolute boxes and binary masks at the original image size. ``instances_to_coco`` turns one image's
result into COCO json results (xywh boxes, compressed RLE masks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from vidseg.structures.box_ops import box_cxcywh_to_xyxy
from vidseg.structures.masks import encode_rle

__all__ = [
    "ImagePostProcessor",
    "topk_queries",
    "upsample_masks",
    "clamp_boxes_to_image",
    "instances_to_coco",
]

Size = Sequence[int] | torch.Tensor


def topk_queries(pred_logits: torch.Tensor, pred_boxes: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Top-k (query, class) pairs by sigmoid score over queries x classes.

    A query may appear several times with different classes (as in Deformable DETR).

    Args:
        pred_logits: ``[B, Q, K]``; pred_boxes: ``[B, Q, 4]`` normalised cxcywh.
    Returns:
        ``"scores"`` ``[B, k]``, ``"labels"`` ``[B, k]`` int64 (0..K-1), ``"boxes"`` ``[B, k, 4]`` normalised
        cxcywh, ``"query_idx"`` ``[B, k]`` int64 (the model computes masks for these queries).
    """
    b, q, num_classes = pred_logits.shape
    k = min(k, q * num_classes)
    prob = pred_logits.sigmoid().view(b, -1)
    scores, flat = torch.topk(prob, k, dim=1)
    query_idx = torch.div(flat, num_classes, rounding_mode="floor")
    labels = flat % num_classes
    boxes = torch.gather(pred_boxes, 1, query_idx.unsqueeze(-1).expand(-1, -1, 4))
    return {"scores": scores, "labels": labels, "boxes": boxes, "query_idx": query_idx}


def upsample_masks(
    logits: torch.Tensor,
    padded_size: Size,
    image_size: Size,
    orig_size: Size,
    threshold: float | None = 0.5,
) -> torch.Tensor:
    """Mask logits covering the padded input, resized straight to the original image size.

    The logits at ``[h, w]`` cover the padded input ``padded_size``, of which the top-left ``image_size`` is
    the resized image. One bilinear resize (align_corners False) to ``padded_size * orig_size / image_size``
    followed by a crop to ``orig_size`` maps the valid area onto the original pixels.

    Args:
        logits: ``[N, h, w]``.
        padded_size, image_size, orig_size: ``(H, W)`` each.
        threshold: probability threshold; None returns probabilities.
    Returns:
        ``[N, H0, W0]`` bool masks (or probabilities in the dtype of ``logits``).
    """
    ph, pw = (int(v) for v in padded_size)
    ih, iw = (int(v) for v in image_size)
    oh, ow = (int(v) for v in orig_size)
    if logits.shape[0] == 0:
        dtype = torch.bool if threshold is not None else logits.dtype
        return torch.zeros((0, oh, ow), dtype=dtype, device=logits.device)
    th = max(oh, round(ph * oh / ih))
    tw = max(ow, round(pw * ow / iw))
    # In the logits' dtype: a float64 model keeps float64 probabilities (no rounding through float32).
    up = F.interpolate(logits[:, None], size=(th, tw), mode="bilinear", align_corners=False)
    prob = up[:, 0, :oh, :ow].sigmoid()
    return prob > threshold if threshold is not None else prob


def clamp_boxes_to_image(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip absolute xyxy boxes ``[..., 4]`` to ``[0, width] x [0, height]``.

    DeVIS clamps its video (clip) boxes this way (``DeVISPostProcessor.process_boxes``); its COCO
    post-processor does not.
    """
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


class ImagePostProcessor:
    """Raw outputs -> per-image instances (top-k over queries x classes).

    Boxes are computed as the official ``DefDETRPostProcessor`` does: cxcywh -> xyxy, times
    ``(w, h, w, h)`` of the original image, not clamped (they may extend past the image, and COCO bbox AP is
    computed on those), in the dtype of the model's outputs.

    Args:
        num_out: k (``TEST.NUM_OUT``; DeVIS COCO configs use 50, the default 100).
        mask_threshold: binarisation threshold on mask probabilities.
        clamp_boxes: clip boxes to the image (False, as the official COCO code; the video path clamps, see
            :func:`clamp_boxes_to_image`).
    """

    def __init__(self, num_out: int = 100, mask_threshold: float = 0.5, clamp_boxes: bool = False) -> None:
        self.num_out = num_out
        self.mask_threshold = mask_threshold
        self.clamp_boxes = clamp_boxes

    def select(self, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``topk_queries`` of the final layer; the model stores the result as ``outputs["topk"]`` and
        computes ``pred_masks`` for ``topk["query_idx"]``."""
        return topk_queries(outputs["pred_logits"], outputs["pred_boxes"], self.num_out)

    @torch.no_grad()
    def __call__(
        self,
        outputs: Mapping[str, object],
        orig_sizes: Sequence[Size],
        image_sizes: Sequence[Size] | None = None,
        padded_size: Size | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """
        Args:
            outputs: ``"pred_logits"`` ``[B, Q, K]``, ``"pred_boxes"`` ``[B, Q, 4]``, optionally ``"topk"``
                (the dict of ``select``) and ``"pred_masks"``: ``[B, k, h, w]`` aligned with
                ``outputs["topk"]`` when that is present, else ``[B, Q, h, w]`` for all queries (gathered
                here).
            orig_sizes: per image ``(H0, W0)`` of the original image (boxes and masks are returned at this
                size).
            image_sizes: per image ``(H, W)`` of the resized image inside the padded input (default: the
                padded size, i.e. no padding).
            padded_size: ``(H_pad, W_pad)`` of the model input (default ``4 x`` the mask size).
        Returns:
            per image ``{"scores": [k], "labels": [k] int64, "boxes": [k, 4] absolute xyxy at the original
            size, "masks": [k, H0, W0] bool}`` (no ``"masks"`` without ``pred_masks``).
        """
        logits = outputs["pred_logits"]
        bsz = logits.shape[0]
        if len(orig_sizes) != bsz:
            raise ValueError(f"ImagePostProcessor: {len(orig_sizes)} orig_sizes for a batch of {bsz}")
        top = outputs.get("topk")
        masks = outputs.get("pred_masks")
        if top is None:
            top = self.select(outputs)
            if masks is not None:
                if masks.shape[1] != logits.shape[1]:
                    raise ValueError(
                        f"ImagePostProcessor: 'pred_masks' {tuple(masks.shape)} without 'topk' must "
                        f"cover all {logits.shape[1]} queries"
                    )
                idx = top["query_idx"][:, :, None, None].expand(-1, -1, *masks.shape[-2:])
                masks = torch.gather(masks, 1, idx)
        elif masks is not None and masks.shape[1] != top["query_idx"].shape[1]:
            raise ValueError(
                f"ImagePostProcessor: 'pred_masks' {tuple(masks.shape)} not aligned with "
                f"'topk' ({top['query_idx'].shape[1]} entries)"
            )
        if masks is not None and padded_size is None:
            padded_size = (4 * masks.shape[-2], 4 * masks.shape[-1])

        results = []
        for i in range(bsz):
            oh, ow = (int(v) for v in orig_sizes[i])
            boxes = box_cxcywh_to_xyxy(top["boxes"][i])
            boxes = boxes * torch.tensor([ow, oh, ow, oh], dtype=boxes.dtype, device=boxes.device)
            if self.clamp_boxes:
                boxes = clamp_boxes_to_image(boxes, oh, ow)
            res = {"scores": top["scores"][i], "labels": top["labels"][i], "boxes": boxes}
            if masks is not None:
                isize = image_sizes[i] if image_sizes is not None else padded_size
                res["masks"] = upsample_masks(masks[i], padded_size, isize, (oh, ow), self.mask_threshold)
            results.append(res)
        return results


def instances_to_coco(
    result: Mapping[str, torch.Tensor],
    image_id: int,
    label_to_category: Callable[[int], int] | Mapping[int, int] | None = None,
) -> list[dict]:
    """One image's result (from ``ImagePostProcessor``) as COCO json results.

    Args:
        label_to_category: contiguous label -> dataset category id (mapping or callable); default
            ``label + 1`` (the DeVIS COCO convention, label = category_id - 1).
    Returns:
        dicts ``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}`` plus ``"segmentation"``
        (compressed RLE, ``counts`` as str) when the result has masks.
    """
    scores = result["scores"].tolist()
    labels = result["labels"].tolist()
    boxes = result["boxes"].detach().cpu()  # the model's dtype, as the official evaluation writes them
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    if label_to_category is None:
        cats = [int(lbl) + 1 for lbl in labels]
    elif callable(label_to_category):
        cats = [int(label_to_category(int(lbl))) for lbl in labels]
    else:
        missing = [lbl for lbl in labels if int(lbl) not in label_to_category]
        if missing:
            raise KeyError(f"instances_to_coco: labels {sorted(set(missing))} have no category id")
        cats = [int(label_to_category[int(lbl)]) for lbl in labels]
    masks = result.get("masks")
    masks_np = masks.detach().cpu().numpy() if masks is not None else None
    out = []
    for j in range(len(scores)):
        det = {"image_id": int(image_id), "category_id": cats[j], "score": float(scores[j]), "bbox": xywh[j]}
        if masks_np is not None:
            det["segmentation"] = encode_rle(masks_np[j])
        out.append(det)
    return out
