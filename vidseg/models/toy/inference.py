"""Toy inference: one forward over the whole video, top-k (query, class) pairs -> tracks of per-frame RLEs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.structures.clip_batch import ClipBatch, pad_frames
from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track, VideoResult


def as_clip_batch(video: Any) -> ClipBatch:
    """A one-video ``ClipBatch`` from a ``VideoItem`` (frames padded to a multiple of 32) or a ClipBatch."""
    if isinstance(video, ClipBatch):
        if video.batch_size != 1:
            raise ValueError(f"expected a ClipBatch of one video, got B={video.batch_size}")
        return video
    if not all(hasattr(video, k) for k in ("video_id", "frames", "orig_size", "image_size")):
        raise TypeError(f"expected a VideoItem or a ClipBatch, got {type(video).__name__}")
    frames = video.frames.all()  # [T, 3, H, W]
    h, w = frames.shape[-2:]
    padded, pad_mask = pad_frames([frames], size_divisibility=32)
    meta = {"video_id": video.video_id, "orig_size": tuple(video.orig_size), "image_size": (h, w)}
    return ClipBatch(frames=padded, pad_mask=pad_mask, meta=[meta])


class ToyInference:
    """``inference(model, video) -> VideoResult``.

    ``video`` is a ``vidseg.data.VideoItem`` (``video_id``, lazy ``frames``, ``orig_size``, ``image_size``) or
    a :class:`ClipBatch` holding one whole video (``B == 1``) with ``meta[0]`` keys ``video_id``,
    ``orig_size`` and ``image_size``. The toy model sees the whole video as one clip.
    """

    def __init__(self, topk: int = 10, mask_threshold: float = 0.5) -> None:
        self.topk = topk
        self.mask_threshold = mask_threshold

    @torch.no_grad()
    def __call__(self, model: nn.Module, video: ClipBatch) -> VideoResult:
        video = as_clip_batch(video)
        meta = video.meta[0]
        oh, ow = (int(s) for s in meta["orig_size"])
        ih, iw = (int(s) for s in meta.get("image_size", (oh, ow)))
        device = next(model.parameters()).device
        out = model(video.to(device))
        prob = out["pred_logits"][0].float().softmax(-1)[:, :-1]  # [Q, K]
        q, k = prob.shape
        scores, idx = prob.flatten().topk(min(self.topk, q * k))
        masks = out["pred_masks"][0].float()  # [Q, T, h, w]
        ph, pw = video.frames.shape[-2:]
        result = VideoResult(video_id=int(meta["video_id"]), height=oh, width=ow)
        for score, i in zip(scores.tolist(), idx.tolist()):
            qi, label = divmod(i, k)
            m = F.interpolate(masks[qi][:, None], size=(ph, pw), mode="bilinear", align_corners=False)
            m = F.interpolate(m[:, :, :ih, :iw], size=(oh, ow), mode="bilinear", align_corners=False)[:, 0]
            p = m.sigmoid()
            binary = p > self.mask_threshold
            # Mask2Former-style rescoring: class score times the mean mask probability inside the mask.
            inside = (p * binary).sum() / binary.sum().clamp(min=1)
            bn = binary.cpu().numpy()
            result.tracks.append(
                Track(
                    score=float(score * inside),
                    label=int(label),
                    # An empty predicted frame is "not in this frame" (None), as official results write it.
                    masks=[encode_rle(fr) if fr.any() else None for fr in bn],
                    track_id=int(qi),
                )
            )
        return result
