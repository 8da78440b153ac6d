"""Inference of the DeVIS image stage: per-image instances, or one-frame tracks on a video."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidseg.models.devis.postprocess import ImagePostProcessor, clamp_boxes_to_image
from vidseg.structures.clip_batch import ClipBatch, pad_frames
from vidseg.structures.results import VideoResult, one_frame_tracks

__all__ = ["ImageInference"]


class ImageInference:
    """``inference(model, batch) -> list[dict]``: COCO-style instances per image of a T=1 ``ClipBatch``.

    Each result is ``{"scores" [k], "labels" [k], "boxes" [k,4] absolute xyxy, "masks" [k,H0,W0] bool}`` at
    the original size (``meta["orig_size"]``), via
    :class:`vidseg.models.devis.postprocess.ImagePostProcessor`.
    """

    def __init__(self, postprocessor: ImagePostProcessor):
        self.postprocessor = postprocessor

    @torch.no_grad()
    def __call__(self, model: nn.Module, batch: Any) -> Any:
        """A T=1 ``ClipBatch`` -> per-image instance dicts; a ``VideoItem`` -> ``VideoResult``.

        On a video the image model has no tracker: every detection of frame t becomes a one-frame track
        (its segmentation is None on every other frame), so the YouTube-VIS metric and the renderer can still
        read its output through the same interface as the video methods.
        """
        if not isinstance(batch, ClipBatch):
            return self._video(model, batch)
        return self._images(model, batch)

    def _video(self, model: nn.Module, video: Any) -> VideoResult:
        n = video.length() if callable(getattr(video, "length", None)) else len(video.frames)
        h, w = video.image_size
        result = VideoResult(
            video_id=int(video.video_id), height=int(video.orig_size[0]), width=int(video.orig_size[1])
        )
        device = next(model.parameters()).device
        for t in range(n):
            # Padded to the backbone's stride exactly as the collate pads training clips.
            frames, pad = pad_frames([video.frames[t][None]], size_divisibility=32)
            meta = [{"orig_size": tuple(video.orig_size), "image_size": (h, w)}]
            (inst,) = self._images(model, ClipBatch(frames=frames, pad_mask=pad, meta=meta).to(device))
            # Boxes go along as xywh so COCO bbox AP scores the predicted boxes, not the masks' tight boxes;
            # a box-only model (MODEL.MASK_ON False) gives tracks without masks. Video boxes are clamped to
            # the frame, as DeVIS's clip post-processor does (the COCO path leaves them unclamped).
            xyxy = clamp_boxes_to_image(inst["boxes"].cpu(), int(video.orig_size[0]), int(video.orig_size[1]))
            result.tracks.extend(one_frame_tracks({**inst, "boxes": xyxy}, t, n))
        return result

    def _images(self, model: nn.Module, batch: ClipBatch) -> list[dict]:
        was_training = model.training
        model.eval()
        try:
            outputs = model(batch)
        finally:
            model.train(was_training)
        padded = tuple(batch.frames.shape[-2:])
        orig = [m.get("orig_size", padded) for m in batch.meta] if batch.meta else [padded] * batch.batch_size
        sizes = [m.get("image_size", padded) for m in batch.meta] if batch.meta else None
        return self.postprocessor(outputs, orig, sizes, padded)
