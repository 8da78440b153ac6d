"""Small inputs for the predictor tests: a moving bright square as mp4 / PNG frames, a ToyVIS config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from vidseg.data.video_io import write_video
from vidseg.inference import FrameOutput
from vidseg.structures.results import VideoResult

H, W, N_FRAMES = 48, 64, 6

TOY_YAML = """\
MODEL:
  META_ARCHITECTURE: ToyVIS
  DEVICE: cpu
  TOY:
    NUM_CLASSES: 3
    NUM_QUERIES: 4
    HIDDEN_DIM: 16
    DEC_LAYERS: 1
    TOPK: 5
INPUT:
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 96
OUTPUT_DIR: {out}
"""


def moving_square_frames(n: int = N_FRAMES, h: int = H, w: int = W) -> list[np.ndarray]:
    frames = []
    for t in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        f[8:28, 4 + 5 * t : 24 + 5 * t] = 220
        frames.append(f)
    return frames


def write_mp4(path: Path, n: int = N_FRAMES) -> Path:
    return write_video(path, moving_square_frames(n), fps=6)


def write_frame_folder(folder: Path, n: int = N_FRAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(moving_square_frames(n)):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    return folder


def write_toy_config(tmp: Path) -> Path:
    p = tmp / "toy.yaml"
    p.write_text(TOY_YAML.format(out=tmp / "output"))
    return p


class BrightStream:
    """A streaming inference without a network: one track (id 7) = the pixels brighter than 128.

    ``reads`` records, at each yield, how many frames the source had decoded (to check laziness).
    """

    def __init__(self, shuffle: bool = False) -> None:
        self.shuffle = shuffle
        self.reads: list[int] = []

    def __call__(self, model: nn.Module, video) -> VideoResult:
        raise AssertionError("the predictor must use stream() when it exists")

    def stream(self, model: nn.Module, video) -> Iterator[FrameOutput]:
        order = list(range(video.length))
        if self.shuffle:
            order = order[::-1]
        for t in order:
            video.frames.get([t])  # read and preprocess like a real method
            raw = video.frames.raw(t)
            mask = torch.from_numpy(raw.mean(-1) > 128)[None]
            src = video.frames.source
            self.reads.append(getattr(src, "decoded", -1))
            yield FrameOutput(t, [7], mask, [0.5 + 0.05 * t], [t % 2])


class BrightWhole:
    """A whole-input inference without a network: one track = pixels brighter than 128 on every frame it is
    given, plus (``second_from``) a track on the dark top-left corner from that video frame on.

    ``calls`` records the number of frames of each call (to check clip-by-clip running)."""

    def __init__(self, second_from: int | None = None) -> None:
        self.second_from = second_from
        self.calls: list[int] = []

    def __call__(self, model: nn.Module, video) -> VideoResult:
        from vidseg.structures.masks import encode_rle
        from vidseg.structures.results import Track

        n = video.length
        self.calls.append(n)
        h, w = video.orig_size
        bright = [encode_rle(video.frames.raw(t).mean(-1) > 128) for t in range(n)]
        tracks = [Track(0.9, 2, bright, track_id=0)]
        if self.second_from is not None:
            corner = np.zeros((h, w), bool)
            corner[:6, :6] = True
            src = video.frames.source
            idx = getattr(src, "indices", list(range(n)))  # video frame of each clip position
            masks = [encode_rle(corner) if idx[t] >= self.second_from else None for t in range(n)]
            tracks.append(Track(0.8, 1, masks, track_id=1))
        return VideoResult(video.video_id, h, w, tracks)
