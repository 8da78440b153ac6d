"""Frame sources for the predictor: video files decoded on demand, frame folders, in-memory arrays.

Every source has the ``FrameSource`` interface the data pipeline's ``VideoFrames`` reads: ``len(src)``,
``src[t] -> uint8 [H, W, 3]`` RGB, iteration, and ``name``. Unlike ``vidseg.data.FrameSource`` (which decodes
a whole video file on first access), :class:`StreamingVideoFile` decodes forward and keeps only the last
``cache_size`` frames, so a clip-by-clip pass over a long video holds a bounded number of frames.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidseg.data.errors import DatasetError
from vidseg.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, iter_video_frames, open_frame_source

__all__ = ["ArrayFrames", "LimitedFrames", "StreamingVideoFile", "open_source", "probe_video"]

DEFAULT_FPS = 5.0  # frame folders and arrays carry no rate; YouTube-VIS frames are sampled at ~6 fps


def probe_video(path: str | os.PathLike) -> tuple[int, float]:
    """``(number of frames, frames per second)`` of a video file, without decoding any frame.

    The count comes from the container header, or, where the header has none (some mkv/webm), from
    demuxing the packets (cheap: no decoding). Raises :class:`DatasetError` naming the file.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FPS
            n = int(stream.frames or 0)
            if n <= 0:
                n = sum(1 for p in container.demux(stream) if p.size)
    except (av.FFmpegError, OSError) as e:
        # FFmpegError's str() starts with "[Errno 1094995529]": its strerror is the words
        raise DatasetError(f"cannot open video {path}: {getattr(e, 'strerror', None) or e}") from None
    if n <= 0:
        raise DatasetError(f"{path}: the video has no frames")
    return n, fps


class StreamingVideoFile:
    """A video file read forward on demand, with a cache of the last ``cache_size`` decoded frames.

    Access in increasing order (or within the cache) is one decode pass. Going back past the cache
    re-opens the file and decodes from the start again (correct but slow; a warning says so once).
    """

    def __init__(self, path: str | os.PathLike, cache_size: int = 16) -> None:
        self.path = Path(path)
        self.length, self.fps = probe_video(self.path)
        self.name = self.path.stem
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decoder: Iterator[np.ndarray] | None = None
        self._next = 0  # index of the frame the decoder yields next
        self._warned_seek = False
        self.decoded = 0  # frames decoded so far (for tests and benchmarks)

    def __len__(self) -> int:
        return self.length

    def _restart(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
        self._decoder = iter_video_frames(self.path)
        self._next = 0

    def __getitem__(self, t: int) -> np.ndarray:
        t = int(t)
        if not 0 <= t < self.length:
            raise IndexError(f"{self.path}: frame {t} out of range (the video has {self.length} frames)")
        if t in self._cache:
            return self._cache[t]
        if self._decoder is None or t < self._next:
            if self._decoder is not None and not self._warned_seek:
                warnings.warn(
                    f"{self.path}: frame {t} is before the decode cache; decoding again from the start",
                    stacklevel=2,
                )
                self._warned_seek = True
            self._restart()
        while self._next <= t:
            try:
                frame = next(self._decoder)
            except StopIteration:
                raise DatasetError(
                    f"{self.path}: frame {t} cannot be decoded (the stream ended after {self._next} of "
                    f"{self.length} frames the header announced)"
                ) from None
            self._cache[self._next] = frame
            self.decoded += 1
            self._next += 1
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[t]

    def __iter__(self) -> Iterator[np.ndarray]:
        # A fresh pass that leaves the random-access cursor alone (used to render after predicting).
        for t, frame in enumerate(iter_video_frames(self.path)):
            if t >= self.length:
                return
            yield frame

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._cache.clear()


class ArrayFrames:
    """In-memory frames: a list of ``uint8 [H, W, 3]`` RGB arrays, checked up front."""

    def __init__(self, frames: Sequence[Any], name: str = "video") -> None:
        checked = []
        for i, f in enumerate(frames):
            a = np.asarray(f)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise DatasetError(
                    f"frame {i} of the array source: expected uint8 [H, W, 3] RGB, "
                    f"got {a.dtype} {list(a.shape)}"
                )
            if checked and a.shape != checked[0].shape:
                raise DatasetError(
                    f"frame {i} of the array source is {list(a.shape)} "
                    f"but frame 0 is {list(checked[0].shape)}"
                )
            checked.append(a)
        if not checked:
            raise DatasetError("the array source has no frames")
        self.frames = checked
        self.name = name
        self.fps = DEFAULT_FPS

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> np.ndarray:
        return self.frames[int(t)]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.frames)


class LimitedFrames:
    """The first ``n`` frames of another source (``--max-frames``)."""

    def __init__(self, source: Any, n: int) -> None:
        self.source = source
        self.length = min(len(source), int(n))
        self.name = getattr(source, "name", "video")
        self.fps = getattr(source, "fps", DEFAULT_FPS)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= int(t) < self.length:
            raise IndexError(f"frame {t} out of range ({self.length} frames)")
        return self.source[t]

    def __iter__(self) -> Iterator[np.ndarray]:
        for t, frame in enumerate(self.source):
            if t >= self.length:
                return
            yield frame


def open_source(
    source: str | os.PathLike | Sequence[Any], *, max_frames: int | None = None, cache_size: int = 16
) -> Any:
    """A frame source for a video file, a folder of frames, a list of frame files or of ``uint8`` arrays.

    Nothing is decoded here except the header of a video file (frame count, rate); folders are listed only.
    Raises :class:`DatasetError` naming the path for a missing or unreadable source.
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise DatasetError(f"source not found: {p}")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            src: Any = StreamingVideoFile(p, cache_size=cache_size)
        elif p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(
                f"{p}: not a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames"
            )
        else:
            src = open_frame_source(p)  # a folder of frames (listed, not read) or a single image
            src.fps = DEFAULT_FPS
    elif len(source) and all(isinstance(s, (str, os.PathLike)) for s in source):
        src = open_frame_source([os.fspath(s) for s in source])
        src.name, src.fps = "video", DEFAULT_FPS
    else:
        src = ArrayFrames(list(source))
    if max_frames is not None and max_frames > 0 and max_frames < len(src):
        src = LimitedFrames(src, max_frames)
    return src
