"""Inference results: what every method's tracker produces and what evaluators, writers and renderers read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

RLE = dict[str, Any]  # {"size": [h, w], "counts": str} (compressed, utf-8 string counts)


@dataclass
class Track:
    """One predicted object trajectory over a whole video.

    Attributes:
        score: track confidence in [0, 1].
        label: contiguous class label (0..K-1); the dataset category id is found through the dataset metadata.
        masks: one entry per video frame: compressed RLE or None where the object is absent.
        frame_scores: optional per-frame scores (None where absent).
        track_id: optional id, stable across the frames of the video.
        boxes: optional per-frame boxes ``[x, y, w, h]`` in original-image pixels (None where absent); image
            models fill it so COCO bbox AP uses the predicted boxes rather than the masks' tight boxes.
    """

    score: float
    label: int
    masks: list[RLE | None]
    frame_scores: list[float | None] | None = None
    track_id: int | None = None
    boxes: list[list[float] | None] | None = None


@dataclass
class VideoResult:
    """All tracks of one video. ``height``/``width`` are the original video size."""

    video_id: int
    height: int
    width: int
    tracks: list[Track] = field(default_factory=list)

    def to_official(self, label_to_category_id: dict[int, int] | list[int]) -> list[dict[str, Any]]:
        """Entries of the official YouTube-VIS/OVIS results JSON:
        ``{"video_id", "score", "category_id", "segmentations": [RLE | None per frame]}``."""
        out = []
        for tr in self.tracks:
            out.append(
                {
                    "video_id": int(self.video_id),
                    "score": float(tr.score),
                    "category_id": int(label_to_category_id[tr.label]),
                    "segmentations": tr.masks,
                }
            )
        return out


@dataclass
class FrameOutput:
    """The tracks present on one frame: what a streaming inference yields (see ``vidseg.inference.protocol``;
    it lives here, below ``models``, so that a method's own ``stream`` can build it).

    Attributes:
        frame_idx: index of the frame in the video.
        track_ids: ``[N]`` stable track ids.
        masks: bool ``[N, H0, W0]`` at the original frame size (CPU).
        scores: ``[N]`` confidence of each track as known at this frame (online methods may revise it later).
        labels: ``[N]`` contiguous class labels (0..K-1).
    """

    frame_idx: int
    track_ids: list[int]
    masks: torch.Tensor
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.track_ids)
        if self.masks.ndim != 3 or self.masks.shape[0] != n:
            raise ValueError(
                f"frame {self.frame_idx}: masks must be [N={n}, H, W], got {list(self.masks.shape)}"
            )
        if len(self.scores) != n or len(self.labels) != n:
            raise ValueError(
                f"frame {self.frame_idx}: {n} track ids but {len(self.scores)} scores and "
                f"{len(self.labels)} labels"
            )


def one_frame_tracks(inst: dict, t: int, n: int) -> list[Track]:
    """Image-model detections on frame ``t`` of an ``n``-frame video as tracks present on that frame only.

    Args:
        inst: ``{"scores" [k], "labels" [k], "boxes" [k, 4] absolute xyxy, "masks" [k, H, W] bool}`` (masks
            optional).
    Returns:
        k tracks whose ``masks`` (RLE), ``frame_scores`` and ``boxes`` (xywh, so that COCO bbox AP scores the
        predicted boxes, not the masks' tight boxes) are None on every other frame.
    """
    from vidseg.structures.masks import encode_rle

    xyxy = inst["boxes"].detach().cpu()
    xywh = (xyxy[:, 2:] - xyxy[:, :2]).tolist()
    xy = xyxy[:, :2].tolist()
    masks = inst.get("masks")
    tracks = []
    for j, (score, label) in enumerate(zip(inst["scores"].tolist(), inst["labels"].tolist())):
        per_frame: list = [None] * n
        if masks is not None:
            per_frame[t] = encode_rle(masks[j].cpu().numpy())
        scores: list = [None] * n
        scores[t] = float(score)
        boxes: list = [None] * n
        boxes[t] = [*xy[j], *xywh[j]]
        tracks.append(
            Track(score=float(score), label=int(label), masks=per_frame, frame_scores=scores, boxes=boxes)
        )
    return tracks
