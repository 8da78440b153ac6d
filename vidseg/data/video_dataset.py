"""The inference dataset: whole videos, frames resized per ``INPUT.MIN/MAX_SIZE_TEST``, normalised lazily."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from vidseg.data.clip_dataset import normalize_frames
from vidseg.data.errors import DatasetError
from vidseg.data.frame_sampling import InferenceClip, overlapping_clips
from vidseg.data.records import DatasetMetadata, VideoRecord
from vidseg.data.transforms import resize_image, shortest_edge_size
from vidseg.data.video_io import FrameSource, open_frame_source

__all__ = ["VideoFrames", "VideoItem", "VideoDataset", "video_item_from_source"]


class VideoFrames:
    """Lazy, preprocessed frames of one video: ``len``, ``[t] -> [3, H, W]``,
    ``get(indices) -> [k, 3, H, W]``, ``all() -> [T, 3, H, W]`` (float, resized to ``image_size``,
    normalised). Frames are read on demand, so a long OVIS video is never held in memory at once unless
    asked for."""

    def __init__(
        self,
        source: FrameSource,
        image_size: tuple[int, int],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        expected_size: tuple[int, int] | None = None,
        video: str = "",
    ) -> None:
        self.source = source
        self.image_size = image_size
        self.pixel_mean, self.pixel_std, self.input_format = pixel_mean, pixel_std, input_format
        self.expected_size = expected_size
        self.video = video

    def __len__(self) -> int:
        return len(self.source)

    def raw(self, t: int) -> np.ndarray:
        """Frame ``t`` as read: ``uint8 [H0, W0, 3]`` RGB at the original size."""
        img = self.source[t]
        if self.expected_size is not None and img.shape[:2] != tuple(self.expected_size):
            h, w = self.expected_size
            raise DatasetError(
                f"video {self.video}: frame {t} is {img.shape[1]}x{img.shape[0]} but the video is {w}x{h}"
            )
        return img

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        # Each uint8 frame is resized with PIL bilinear, as the official val pipelines do (see resize_image).
        frames = [resize_image(self.raw(int(t)), self.image_size) for t in indices]
        frames = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
        return normalize_frames(frames, self.pixel_mean, self.pixel_std, self.input_format)

    def __getitem__(self, t: int) -> torch.Tensor:
        return self.get([t])[0]

    def all(self) -> torch.Tensor:
        return self.get(range(len(self)))


@dataclass
class VideoItem:
    """One inference video.

    Attributes:
        video_id: the JSON video id (or 0 for a raw source).
        record: the video record (None for a raw folder/video file).
        frames: lazy preprocessed frames (see :class:`VideoFrames`).
        orig_size: ``(h, w)`` of the original frames (results are produced at this size).
        image_size: ``(h, w)`` after the test resize, before padding.
    """

    video_id: int
    record: VideoRecord | None
    frames: VideoFrames
    orig_size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def length(self) -> int:
        return len(self.frames)

    def clips(self, num_frames: int, stride: int) -> Iterator[tuple[InferenceClip, torch.Tensor]]:
        """DeVIS near-online iteration: ``(clip, frames [T, 3, H, W])`` per overlapping clip (see
        :func:`~vidseg.data.frame_sampling.overlapping_clips`); each frame is read and preprocessed per
        clip."""
        for clip in overlapping_clips(self.length, num_frames, stride):
            yield clip, self.frames.get(clip.indices)


class VideoDataset(Dataset):
    """Videos of a split for inference, one :class:`VideoItem` per video (frames loaded lazily).

    Args:
        records: video records; metadata: the dataset metadata (class names, category ids).
        min_size, max_size: test resize (shorter side, long-side cap; DeVIS 360/640).
    """

    def __init__(
        self,
        records: list[VideoRecord],
        metadata: DatasetMetadata,
        min_size: int = 360,
        max_size: int | None = 640,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
    ) -> None:
        self.records = records
        self.metadata = metadata
        self.min_size, self.max_size = min_size, max_size
        self.pixel_mean, self.pixel_std, self.input_format = list(pixel_mean), list(pixel_std), input_format

    def __len__(self) -> int:
        return len(self.records)

    @property
    def total_frames(self) -> int:
        return sum(r.length for r in self.records)

    def __getitem__(self, i: int) -> VideoItem:
        rec = self.records[i]
        size = shortest_edge_size(rec.height, rec.width, self.min_size, self.max_size)
        frames = VideoFrames(
            FrameSource(files=rec.file_names, name=rec.describe()),
            size,
            self.pixel_mean,
            self.pixel_std,
            self.input_format,
            expected_size=(rec.height, rec.width),
            video=rec.describe(),
        )
        return VideoItem(rec.video_id, rec, frames, (rec.height, rec.width), size)


def video_item_from_source(
    source: str | Sequence[str],
    min_size: int = 360,
    max_size: int | None = 640,
    pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
    pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
    input_format: str = "RGB",
    video_id: int = 0,
) -> VideoItem:
    """A :class:`VideoItem` for a raw folder of frames or a video file (for the predictor / demo)."""
    src = open_frame_source(source)
    h, w = src[0].shape[:2]
    size = shortest_edge_size(h, w, min_size, max_size)
    frames = VideoFrames(src, size, pixel_mean, pixel_std, input_format, (h, w), src.name)
    return VideoItem(video_id, None, frames, (h, w), size)
