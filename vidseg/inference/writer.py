"""Rendering a prediction to a video file one frame at a time (bounded memory, unlike collecting every frame).

``vidseg.data.write_video`` takes all frames at once; :class:`StreamingVideoWriter` encodes each frame as it
comes, so rendering a long video holds one frame and the (compact, RLE) result.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidseg.structures.masks import decode_segmentation
from vidseg.structures.results import VideoResult
from vidseg.visualization import Overlay, draw_overlays, track_colour

__all__ = ["StreamingVideoWriter", "render_result_streaming"]


class StreamingVideoWriter:
    """Write RGB ``uint8 [H, W, 3]`` frames to ``.mp4``/``.mkv``/``.mov`` (H.264) or ``.avi`` (MPEG-4).

    Use as a context manager; ``write(frame)`` encodes at once. Odd sizes are padded to even (yuv420p).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 5.0) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov", ".avi"):
            raise ValueError(f"{self.path}: the rendered video must be .mp4, .mkv, .mov or .avi")
        self.fps = fps
        self.count = 0
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> StreamingVideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, h: int, w: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        codec = "mpeg4" if self.path.suffix.lower() == ".avi" else "libx264"
        # Keep NTSC rates such as 30000/1001 exact instead of rounding them to an integer.
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(5)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": "20", "preset": "veryfast"}
        self._size = (h, w)

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.asarray(frame, dtype=np.uint8)
        h, w = frame.shape[:2]
        if self._container is None:
            self._open(h, w)
        if (h, w) != self._size:
            raise ValueError(
                f"{self.path}: frame {self.count} is {w}x{h}, the video {self._size[1]}x{self._size[0]}"
            )
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()
        self._container = None


def render_result_streaming(
    out_path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    result: VideoResult,
    track_ids: Sequence[int],
    classes: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    fps: float = 5.0,
    progress: bool = True,
    total: int | None = None,
) -> Path:
    """Draw the tracks of ``result`` with score >= ``score_threshold`` over ``frames`` and encode them one by
    one. Each track is labelled ``"<id>: <class> <score>"`` in the colour of its id. Returns the path."""
    keep = [(tid, tr) for tid, tr in zip(track_ids, result.tracks) if tr.score >= score_threshold]
    texts = {}
    for tid, tr in keep:
        name = (
            classes[tr.label] if classes is not None and 0 <= tr.label < len(classes) else f"class {tr.label}"
        )
        texts[tid] = f"{tid}: {name} {tr.score:.2f}"
    with StreamingVideoWriter(out_path, fps=fps) as writer:
        it = tqdm(frames, desc="render", unit="frame", total=total, disable=not progress, leave=False)
        for t, frame in enumerate(it):
            overlays = []
            for tid, tr in keep:
                rle = tr.masks[t] if t < len(tr.masks) else None
                m = decode_segmentation(rle, result.height, result.width) if rle else None
                if m is not None and m.any():
                    overlays.append(Overlay(m, track_colour(tid), texts[tid], float(tr.score)))
            writer.write(draw_overlays(frame, overlays) if overlays else frame)
    return Path(out_path)
