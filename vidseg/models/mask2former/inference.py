"""Per-frame inference of Mask2Former: COCO-style instances per image, or one-frame tracks on a video.

Instance post-processing follows Mask2Former's ``instance_inference``: the top-k (query, class) pairs by
softmax probability (a query may appear with several classes), masks resized to the padded input, cropped to
the image and resized to the original size (detectron2's ``sem_seg_postprocess``), thresholded at logit 0,
and each score multiplied by the mean foreground probability inside its mask. Boxes are the masks' tight
boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.structures.clip_batch import ClipBatch, pad_frames
from vidseg.structures.results import VideoResult, one_frame_tracks

__all__ = ["InstancePostProcessor", "FrameInference", "masks_to_boxes"]

Size = Sequence[int]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``[N, 4]`` xyxy boxes (pixel edges, exclusive max) of ``[N, H, W]`` bool masks; empty: zeros."""
    n = masks.shape[0]
    out = torch.zeros(n, 4, dtype=torch.float32, device=masks.device)
    if n == 0:
        return out
    rows, cols = masks.any(2), masks.any(1)
    for i in range(n):
        ys, xs = rows[i].nonzero().flatten(), cols[i].nonzero().flatten()
        if ys.numel():
            out[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return out


class InstancePostProcessor:
    """``(outputs, orig_sizes, image_sizes, padded_size) -> per-image dicts``, the interface the COCO
    evaluator calls.

    Args:
        topk: detections per image (``TEST.DETECTIONS_PER_IMAGE``, 100).

    Each result: ``{"scores" [k], "labels" [k] (0..K-1), "boxes" [k, 4] absolute xyxy, "masks" [k, H0, W0]
    bool}`` at the original size.
    """

    def __init__(self, topk: int = 100) -> None:
        self.topk = topk

    @torch.no_grad()
    def single(
        self, logits: torch.Tensor, masks: torch.Tensor, padded: Size, image: Size, orig: Size
    ) -> dict:
        """One image: ``logits [Q, K+1]``, mask logits ``[Q, h, w]`` covering the ``padded`` input."""
        q, k1 = logits.shape
        num_classes = k1 - 1
        scores = logits.float().softmax(-1)[:, :-1].flatten()
        top, idx = scores.topk(min(self.topk, scores.numel()))
        labels = idx % num_classes
        query = torch.div(idx, num_classes, rounding_mode="floor")
        m = F.interpolate(
            masks[query][None].float(),
            size=tuple(int(v) for v in padded),
            mode="bilinear",
            align_corners=False,
        )
        m = m[..., : int(image[0]), : int(image[1])]
        m = F.interpolate(m, size=tuple(int(v) for v in orig), mode="bilinear", align_corners=False)[0]
        binary = m > 0
        fg = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        return {"scores": top * fg, "labels": labels, "boxes": masks_to_boxes(binary), "masks": binary}

    def __call__(
        self,
        outputs: Mapping[str, Any],
        orig_sizes: Sequence[Size],
        image_sizes: Sequence[Size] | None = None,
        padded_size: Size | None = None,
    ) -> list[dict]:
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        padded = tuple(padded_size) if padded_size is not None else tuple(4 * s for s in masks.shape[-2:])
        sizes = image_sizes if image_sizes is not None else [padded] * len(orig_sizes)
        return [
            self.single(logits[i], masks[i], padded, sizes[i] or padded, orig_sizes[i])
            for i in range(logits.shape[0])
        ]


class FrameInference:
    """``inference(model, batch)``: per-image instances of a ``ClipBatch`` (its B*T frames), or a
    ``VideoResult`` of one-frame tracks for a video item (the detector has no tracker: every detection of
    frame ``t`` is a track present only there)."""

    def __init__(self, postprocessor: InstancePostProcessor) -> None:
        self.postprocessor = postprocessor

    @torch.no_grad()
    def __call__(self, model: nn.Module, batch: Any) -> Any:
        if isinstance(batch, ClipBatch):
            return self._images(model, batch)
        return self._video(model, batch)

    def _images(self, model: nn.Module, batch: ClipBatch) -> list[dict]:
        was_training = model.training
        model.eval()
        try:
            outputs = model(batch)
        finally:
            model.train(was_training)
        padded = tuple(batch.frames.shape[-2:])
        t = batch.num_frames
        metas = [m for m in batch.meta for _ in range(t)] if batch.meta else [{}] * (batch.batch_size * t)
        orig = [m.get("orig_size", padded) for m in metas]
        sizes = [m.get("image_size", padded) for m in metas]
        return self.postprocessor(outputs, orig, sizes, padded)

    def _video(self, model: nn.Module, video: Any) -> VideoResult:
        n = video.length() if callable(getattr(video, "length", None)) else len(video.frames)
        h0, w0 = (int(v) for v in video.orig_size)
        result = VideoResult(video_id=int(video.video_id), height=h0, width=w0)
        device = next(model.parameters()).device
        for t in range(n):
            frames, pad = pad_frames([video.frames[t][None]], size_divisibility=32)
            meta = [{"orig_size": (h0, w0), "image_size": tuple(video.image_size)}]
            (inst,) = self._images(model, ClipBatch(frames=frames, pad_mask=pad, meta=meta).to(device))
            result.tracks.extend(one_frame_tracks(inst, t, n))
        return result
