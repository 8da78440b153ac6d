"""Reading frames (image folders, video files via PyAV) and writing mp4/gif videos.

Frames are ``np.uint8 [H, W, 3]`` RGB arrays throughout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidseg.data.errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "load_image",
    "read_video_frames",
    "iter_video_frames",
    "write_video",
    "FrameSource",
    "open_frame_source",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")


def load_image(path: str | os.PathLike, video: object = None) -> np.ndarray:
    """An image file as RGB ``uint8 [H, W, 3]``; a missing or unreadable file raises :class:`DatasetError`."""
    ctx = f"video {video}: " if video is not None else ""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{ctx}frame file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{ctx}cannot read frame {path}: {e}") from None


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Stream the frames of a video file (decoded one at a time, bounded memory)."""
    import av

    if not Path(path).is_file():
        raise DatasetError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        # FFmpegError's str() starts with "[Errno 1094995529]": its strerror is the words
        raise DatasetError(f"cannot open video {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        if not container.streams.video:
            raise DatasetError(f"{path}: no video stream")
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise DatasetError(f"cannot decode video {path}: {e}") from None
    finally:
        container.close()


def read_video_frames(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file as ``uint8 [T, H, W, 3]`` RGB."""
    frames = list(iter_video_frames(path))
    if not frames:
        raise DatasetError(f"{path}: the video has no frames")
    return np.stack(frames)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 5.0) -> Path:
    """Write RGB ``uint8 [H, W, 3]`` frames to ``.mp4`` (H.264, yuv420p; odd sizes are padded to even) or
    ``.gif`` (Pillow). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    if path.suffix.lower() == ".gif":
        ims = [Image.fromarray(f) for f in frames]
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
        return path
    import av

    h, w = frames[0].shape[:2]
    he, we = h + h % 2, w + w % 2  # yuv420p needs even sizes
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if path.suffix.lower() in (".mp4", ".mkv", ".mov") else "mpeg4"
        stream = container.add_stream(codec, rate=int(round(fps)) or 1)
        stream.width, stream.height, stream.pix_fmt = we, he, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        for f in frames:
            if f.shape[:2] != (h, w):
                raise ValueError(f"{path}: frames differ in size: {f.shape[:2]} vs {(h, w)}")
            if (he, we) != (h, w):
                f = np.pad(f, ((0, he - h), (0, we - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class FrameSource:
    """Random access to the frames of a folder of images, a list of image files, or a video file.

    ``len(source)``, ``source[t] -> uint8 [H, W, 3]`` and iteration. A video file is decoded once on first
    access (use :func:`iter_video_frames` to stream very long videos).
    """

    def __init__(self, files: Sequence[str] | None = None, video: str | None = None, name: str = "") -> None:
        self.files = list(files) if files is not None else None
        self.video = video
        self.name = name or (Path(video).stem if video else "")
        self._decoded: np.ndarray | None = None

    def _frames(self) -> np.ndarray:
        if self._decoded is None:
            self._decoded = read_video_frames(self.video)
        return self._decoded

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self._frames())

    def __getitem__(self, t: int) -> np.ndarray:
        if self.files is not None:
            return load_image(self.files[t], self.name or None)
        return self._frames()[t]

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self[t]


def open_frame_source(source: str | os.PathLike | Sequence[str]) -> FrameSource:
    """A :class:`FrameSource` for a folder of JPEG/PNG frames (sorted by name), a video file or a list."""
    if not isinstance(source, (str, os.PathLike)):
        return FrameSource(files=[str(s) for s in source])
    p = Path(source)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError(f"{p}: no image frames ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        return FrameSource(files=files, name=p.name)
    if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
        return FrameSource(video=str(p))
    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        return FrameSource(files=[str(p)], name=p.stem)
    if not p.exists():
        raise DatasetError(f"frame source not found: {p}")
    raise DatasetError(f"{p}: not a folder of frames or a video file ({', '.join(VIDEO_EXTENSIONS)})")
