"""Per-clip inference of the DeVIS video model: a video -> :class:`VideoResult`, without a tracker.

The video is cut into consecutive clips of T frames (``VideoItem.clips(T, stride=T)``: the last clip is the
last T frames, a video shorter than T one ping-pong padded clip). Each clip's top-k (trajectory, class) pairs
become tracks over the frames that clip newly covers (None elsewhere). Within a clip the instance-aware
queries already give one trajectory per slot; linking trajectories ACROSS clips is the multi-cue clip
tracker's job (devis.md §4), which replaces this stitching-free version.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidseg.models.devis.postprocess import upsample_masks
from vidseg.structures.box_ops import box_cxcywh_to_xyxy
from vidseg.structures.clip_batch import ClipBatch, pad_frames
from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track, VideoResult

__all__ = ["ClipInference", "new_positions"]


def new_positions(clip: Any, index: int, num_frames: int, stride: int) -> list[int]:
    """Positions of ``clip`` (the ``index``-th of a video) whose frames no earlier clip has produced.

    ``clip`` is a :class:`vidseg.data.frame_sampling.InferenceClip`. Regular clips after the first overlap the
    previous one by ``T - stride`` frames; the final clip of a longer video starts its new content at
    ``last_real_idx``; a ping-pong padded clip has ``num_real`` genuine frames.
    """
    t = num_frames
    real = int(getattr(clip, "num_real", 0) or t)
    if index == 0:
        return list(range(min(real, t)))
    first = int(clip.last_real_idx) + (t - stride) if clip.last_real_idx else t - stride
    return list(range(min(first, t), t))


class ClipInference:
    """``inference(model, video) -> VideoResult`` for :class:`~vidseg.models.devis.video_model.DeVIS`.

    Args:
        num_frames: T of the model.
        size_divisibility: padding of the clip frames (as the training collate pads).
    """

    def __init__(self, num_frames: int, size_divisibility: int = 32):
        self.num_frames = num_frames
        self.size_divisibility = size_divisibility

    @torch.no_grad()
    def __call__(self, model: nn.Module, video: Any) -> VideoResult:
        n = video.length() if callable(getattr(video, "length", None)) else int(video.length)
        oh, ow = (int(v) for v in video.orig_size)
        result = VideoResult(video_id=int(video.video_id), height=oh, width=ow)
        device = next(model.parameters()).device
        t = self.num_frames
        was_training = model.training
        model.eval()
        try:
            for index, (clip, frames) in enumerate(_clips(video, n, t)):
                padded, pad = pad_frames([frames], self.size_divisibility)
                meta = [{"image_size": tuple(video.image_size), "num_valid_frames": int(clip.num_real or t)}]
                out = model(ClipBatch(frames=padded, pad_mask=pad, meta=meta).to(device))
                self._tracks(result, out["clip_topk"][0], out["pred_masks"][0], clip, index, n, padded, video)
        finally:
            model.train(was_training)
        return result

    def _tracks(self, result: VideoResult, top: dict, masks: torch.Tensor, clip, index, n, padded, video):
        t = self.num_frames
        oh, ow = result.height, result.width
        positions = [p for p in new_positions(clip, index, t, t) if clip.indices[p] < n]
        scale = torch.tensor([ow, oh, ow, oh], dtype=torch.float32)
        boxes = box_cxcywh_to_xyxy(top["boxes"].float().cpu()) * scale  # [T, k, 4]
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, ow)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, oh)
        k = top["scores"].shape[0]
        seg: list[list] = [[None] * n for _ in range(k)]
        fscores: list[list] = [[None] * n for _ in range(k)]
        fboxes: list[list] = [[None] * n for _ in range(k)]
        for p in positions:
            frame = clip.indices[p]
            bin_masks = (
                upsample_masks(masks[:, p], padded.shape[-2:], video.image_size, (oh, ow)).cpu().numpy()
            )
            for j in range(k):
                seg[j][frame] = encode_rle(bin_masks[j])
                fscores[j][frame] = float(top["frame_scores"][p, j])
                x0, y0, x1, y1 = boxes[p, j].tolist()
                fboxes[j][frame] = [x0, y0, x1 - x0, y1 - y0]
        for j in range(k):
            result.tracks.append(
                Track(
                    score=float(top["scores"][j]),
                    label=int(top["labels"][j]),
                    masks=seg[j],
                    frame_scores=fscores[j],
                    boxes=fboxes[j],
                )
            )


def _clips(video: Any, n: int, t: int):
    """``(InferenceClip, frames [T, 3, h, w])`` of a video, consecutive clips of T frames."""
    if hasattr(video, "clips"):
        yield from video.clips(t, t)
        return
    from vidseg.data.frame_sampling import overlapping_clips

    for clip in overlapping_clips(n, t, t):
        yield clip, torch.stack([video.frames[i] for i in clip.indices])
