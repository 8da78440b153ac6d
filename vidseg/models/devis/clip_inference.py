"""Near-online inference of the DeVIS video model (devis.md §4): a video -> :class:`VideoResult`.

The video is cut into overlapping clips of T frames (``overlapping_clips(n, T, STRIDE)``: the last clip is the
last T frames, with its ``last_real_idx``; a video shorter than T is one ping-pong padded clip, cut to n).
Each clip's top-k (trajectory, class) candidates go to the multi-cue :class:`ClipTracker`, which links them
to the tracks of the earlier clips.

Two entry points share one clip loop:

- ``inference(model, video) -> VideoResult`` (evaluation);
- ``inference.stream(model, video)``, the streaming protocol of :mod:`vidseg.inference.protocol`: clips are
  read lazily (``video.clips(T, S)``, one clip of frames at a time), and each frame's
  :class:`~vidseg.structures.results.FrameOutput` is yielded as soon as no later clip covers it (after the
  clip whose successor starts past it). Its masks, per-frame scores and labels are final; the track scores,
  categories and the ``MIN_DETECTIONS`` / ``MIN_TRACK_SCORE`` filters are whole-video policies of the
  official tracker, so they are only known at the end: the generator's return value (``StopIteration.value``,
  what ``yield from`` gives) is the final :class:`VideoResult`, identical to ``inference(model, video)``.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any

import torch
from torch import nn

from vidseg.data.frame_sampling import InferenceClip, overlapping_clips
from vidseg.models.devis.postprocess import upsample_masks
from vidseg.models.devis.tracker import ClipTracker
from vidseg.structures.box_ops import box_cxcywh_to_xyxy
from vidseg.structures.clip_batch import ClipBatch, pad_frames
from vidseg.structures.results import FrameOutput, VideoResult

__all__ = ["ClipInference", "clip_result", "new_positions"]


def new_positions(clip: Any, index: int, num_frames: int, stride: int) -> list[int]:
    """Positions of ``clip`` (the ``index``-th of a video) whose frames no earlier clip has produced.

    ``clip`` is a :class:`vidseg.data.frame_sampling.InferenceClip`. Regular clips after the first overlap the
    previous one by ``T - stride`` frames; the final clip of a longer video starts its new content at
    ``last_real_idx + T - stride``; a ping-pong padded clip has ``num_real`` genuine frames.
    """
    t = num_frames
    real = int(getattr(clip, "num_real", 0) or t)
    if index == 0:
        return list(range(min(real, t)))
    first = int(clip.last_real_idx) + (t - stride) if clip.last_real_idx else t - stride
    return list(range(min(first, t), t))


@torch.no_grad()
def clip_result(
    top: dict[str, torch.Tensor],
    mask_logits: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    orig_size: tuple[int, int],
) -> dict[str, torch.Tensor]:
    """One clip's model output -> the tracker's input (original-size pixels, CPU).

    Args:
        top: ``clip_topk`` of the clip (``"frame_scores"`` ``[T, k]``, ``"labels"`` ``[k]``, ``"slots"``
            ``[k]``, ``"boxes"`` ``[T, k, 4]`` normalised cxcywh).
        mask_logits: ``[k, T, h, w]`` at /4 of the padded input (rows of one slot are equal).
        padded_size, image_size, orig_size: ``(H, W)`` of the padded input, the resized frame, the original.
    Returns:
        ``"frame_scores"`` ``[T, k]``, ``"labels"`` ``[k]``, ``"boxes"`` ``[T, k, 4]`` xyxy clamped to the
        image, ``"centers"`` ``[T, k, 2]`` normalised, ``"masks"`` ``[u, T, H0, W0]`` probabilities for the u
        unique slots (bilinear to the original size, then sigmoid) and ``"mask_index"`` ``[k]`` into them.
    """
    oh, ow = orig_size
    boxes_n = top["boxes"].float().cpu()
    scale = torch.tensor([ow, oh, ow, oh], dtype=torch.float32)
    boxes = box_cxcywh_to_xyxy(boxes_n) * scale
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, ow)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, oh)
    # Masks only for the unique slots: a slot in the top-k with two classes shares one mask.
    uniq, inverse = torch.unique(top["slots"].cpu(), return_inverse=True)
    first = torch.stack([(inverse == u).nonzero()[0, 0] for u in range(len(uniq))]) if len(uniq) else inverse
    logits = mask_logits[first.to(mask_logits.device)]
    t = logits.shape[1]
    probs = (
        torch.stack(
            [
                upsample_masks(logits[:, p], padded_size, image_size, orig_size, threshold=None).float().cpu()
                for p in range(t)
            ],
            dim=1,
        )
        if len(uniq)
        else torch.zeros(0, t, oh, ow)
    )
    return {
        "frame_scores": top["frame_scores"].float().cpu(),
        "labels": top["labels"].cpu(),
        "boxes": boxes,
        "centers": boxes_n[..., :2],
        "masks": probs,
        "mask_index": inverse,
    }


class ClipInference:
    """``inference(model, video) -> VideoResult`` for :class:`~vidseg.models.devis.video_model.DeVIS`.

    Args:
        num_frames: T of the model; stride: ``TEST.CLIP_TRACKING.STRIDE``.
        size_divisibility: padding of the clip frames (as the training collate pads).
        tracker_kwargs: the :class:`ClipTracker` keyword arguments (costs, policies, filters).
    """

    # The stream returns the final VideoResult (see :meth:`stream`): the predictor uses it as it is.
    stream_returns_result = True

    def __init__(
        self,
        num_frames: int,
        size_divisibility: int = 32,
        stride: int | None = None,
        tracker_kwargs: dict[str, Any] | None = None,
    ):
        self.num_frames = num_frames
        self.stride = int(stride or num_frames)
        self.size_divisibility = size_divisibility
        self.tracker_kwargs = dict(tracker_kwargs or {})
        # Totals over every video run so far, for FPS as the spec defines it: frames / (model + stitching).
        self.timing = {"frames": 0, "model_s": 0.0, "stitch_s": 0.0}

    @property
    def fps(self) -> float:
        """``frames / (model + stitching seconds)`` over the videos run so far (0 before any)."""
        secs = self.timing["model_s"] + self.timing["stitch_s"]
        return self.timing["frames"] / secs if secs > 0 else 0.0

    def tracker(
        self, num_video_frames: int, height: int, width: int, keep_released: bool = False
    ) -> ClipTracker:
        """A fresh tracker for one video (``keep_released``: streaming, see :meth:`ClipTracker.pop_frame`)."""
        return ClipTracker(
            num_video_frames,
            height,
            width,
            self.num_frames,
            self.stride,
            keep_released=keep_released,
            **self.tracker_kwargs,
        )

    @torch.no_grad()
    def __call__(self, model: nn.Module, video: Any) -> VideoResult:
        n, (oh, ow) = _length(video), (int(v) for v in video.orig_size)
        tracker = self.tracker(n, oh, ow)
        for _ in self._run(model, video, tracker):
            pass
        return VideoResult(video_id=int(video.video_id), height=oh, width=ow, tracks=tracker.finish())

    def stream(self, model: nn.Module, video: Any) -> Generator[FrameOutput, None, VideoResult]:
        """One :class:`FrameOutput` per frame, in order, each as soon as no later clip can change it.

        ``track_ids`` are the tracker's track indices (the ``track_id`` of the final tracks); ``scores`` and
        ``labels`` are per-frame (the frame's detection score and class), ``masks`` bool ``[N, H0, W0]`` at
        the original size. Memory: one clip of frames, the tracker's soft masks of the overlap (at most T
        frames) and the bool masks of the frames about to be yielded. Returns the final
        :class:`VideoResult` (the value of the ``StopIteration``), the same as ``self(model, video)``:
        tracks listed per frame may be dropped there by ``MIN_DETECTIONS`` / ``MIN_TRACK_SCORE``.
        """
        n, (oh, ow) = _length(video), (int(v) for v in video.orig_size)
        tracker = self.tracker(n, oh, ow, keep_released=True)
        emitted = 0
        # No grad-mode context around the yields (it would leak into the caller): _run disables it per clip.
        for final in self._run(model, video, tracker):
            while emitted < final:
                dets = tracker.pop_frame(emitted)
                empty = torch.zeros(0, oh, ow, dtype=torch.bool)
                masks = torch.stack([m for _, m, _, _ in dets]) if dets else empty
                yield FrameOutput(
                    emitted, [d[0] for d in dets], masks, [d[2] for d in dets], [d[3] for d in dets]
                )
                emitted += 1
        return VideoResult(video_id=int(video.video_id), height=oh, width=ow, tracks=tracker.finish())

    def _run(self, model: nn.Module, video: Any, tracker: ClipTracker) -> Iterator[int]:
        """Run every clip of ``video`` through the model and ``tracker``; after each clip, yield
        ``tracker.final_frames`` (the frames no later clip covers). Frames are read one clip at a time."""
        n = _length(video)
        was_training = model.training
        model.eval()
        try:
            for clip, frames in _clips(video, n, self.num_frames, self.stride):
                with torch.no_grad():
                    orig = (tracker.height, tracker.width)
                    res = self.run_clip(model, clip, frames, tuple(video.image_size), orig)
                t0 = time.perf_counter()
                tracker.update(res)
                self.timing["stitch_s"] += time.perf_counter() - t0
                yield tracker.final_frames
            self.timing["frames"] += n
        finally:
            model.train(was_training)

    def run_clip(
        self, model: nn.Module, clip: InferenceClip, frames: torch.Tensor, image_size: tuple, orig_size: tuple
    ) -> dict[str, Any]:
        """The model on one clip ``frames [T, 3, h, w]`` -> the tracker's input (see :func:`clip_result`)."""
        t = self.num_frames
        device = next(model.parameters()).device
        padded, pad = pad_frames([frames], self.size_divisibility)
        meta = [{"image_size": image_size, "num_valid_frames": int(clip.num_real or t)}]
        batch = ClipBatch(frames=padded, pad_mask=pad, meta=meta).to(device)
        _sync(device)
        t0 = time.perf_counter()
        out = model(batch)
        _sync(device)
        self.timing["model_s"] += time.perf_counter() - t0
        res = clip_result(out["clip_topk"][0], out["pred_masks"][0], padded.shape[-2:], image_size, orig_size)
        res["clip"] = clip
        return res


def _length(video: Any) -> int:
    return video.length() if callable(getattr(video, "length", None)) else int(video.length)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clips(video: Any, n: int, t: int, stride: int) -> Iterator[tuple[InferenceClip, torch.Tensor]]:
    """``(InferenceClip, frames [T, 3, h, w])`` of a video, overlapping clips of T frames."""
    if hasattr(video, "clips"):
        yield from video.clips(t, stride)
        return
    for clip in overlapping_clips(n, t, stride):
        yield clip, torch.stack([video.frames[i] for i in clip.indices])
