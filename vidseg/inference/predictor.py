"""``VideoPredictor``: run a trained model on a video file, a folder of frames or a list of arrays.

::

    predictor = VideoPredictor.from_config(load_config("configs/....yaml"), "model.pth")
    state = predictor.init_state("walk.mp4")            # opens the source; decodes nothing but frame 0
    for frame_idx, track_ids, masks in predictor.propagate(state):
        ...                                             # masks: bool [N, H, W] at the video's size
    result = predictor.predict("walk.mp4")              # VideoResult (all frames, RLE masks)

Methods whose inference object has ``stream(model, video)`` (see :mod:`vidseg.inference.protocol`) are run
frame by frame with bounded memory. The others are run once on the whole video (``inference(model, video)``)
and their result is handed out per frame: their memory grows with the video's length.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vidseg.data.transforms import shortest_edge_size
from vidseg.data.video_dataset import VideoFrames, VideoItem
from vidseg.inference.protocol import FrameOutput, assign_track_ids, frames_from_result, supports_streaming
from vidseg.inference.sources import DEFAULT_FPS, open_source
from vidseg.inference.stitching import ClipStitchingStream
from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track, VideoResult

__all__ = ["PredictorError", "TrackSummary", "InferenceState", "VideoPredictor"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class PredictorError(RuntimeError):
    """A predictor problem that names the file or setting at fault (weights that do not fit, bad outputs)."""


@dataclass
class TrackSummary:
    """What is known about one track so far.

    ``score`` is the mean per-frame score over the frames the track was on, and ``label`` the label with the
    largest summed score, unless the whole-video result gave them (``final``).
    """

    track_id: int
    label: int
    score: float
    first_frame: int
    last_frame: int
    num_frames: int = 0
    final: bool = False
    score_sum: float = 0.0
    label_votes: Counter = field(default_factory=Counter)

    def update(self, frame_idx: int, score: float, label: int) -> None:
        if self.first_frame < 0:
            self.first_frame = frame_idx
        self.last_frame = frame_idx
        self.num_frames += 1
        if self.final:
            return
        self.score_sum += score
        self.label_votes[label] += score
        self.score = self.score_sum / self.num_frames
        self.label = self.label_votes.most_common(1)[0][0]


@dataclass
class InferenceState:
    """One video being predicted.

    Attributes:
        video: the lazy :class:`~vidseg.data.VideoItem` (frames read and preprocessed on demand).
        source: the raw frame source (``len``, ``[t] -> uint8 [H, W, 3]``, iteration).
        name: the source's name (file stem or folder name), used for output files.
        fps: frames per second of a video file (``DEFAULT_FPS`` for frames).
        tracks: ``track_id -> TrackSummary``, filled while propagating (replaced by the final tracks'
            summaries when a stream returns its final result).
        frames_done: frames yielded so far.
        result: the whole-video result: for methods without streaming, and for streams that return one at
            their end (see :mod:`vidseg.inference.protocol`).
    """

    video: VideoItem
    source: Any
    name: str
    fps: float
    tracks: dict[int, TrackSummary] = field(default_factory=dict)
    frames_done: int = 0
    result: VideoResult | None = None

    @property
    def num_frames(self) -> int:
        return self.video.length

    @property
    def orig_size(self) -> tuple[int, int]:
        return self.video.orig_size


class VideoPredictor:
    """Streaming video predictor around a model and its inference object (composition, not a subclass).

    Args:
        model: the network (put in eval mode and moved to ``device``).
        inference: ``inference(model, video) -> VideoResult``, optionally with ``stream(model, video)``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        classes: class names by contiguous label (for rendering), or None.
        label_to_category_id: dataset category id per label (results JSON); None: ``label + 1``.
        min_size, max_size: test resize (shorter side, long-side cap).
        pixel_mean, pixel_std: RGB 0-255 normalisation; input_format: ``"RGB"`` or ``"BGR"``.
        score_threshold: tracks (streaming: per-frame detections) below it are left out of the outputs.
        topk: keep at most this many tracks by score in :meth:`predict` (None: all).
        cache_size: decoded frames a video-file source keeps (at least a method's clip length).
        clip_length, clip_stride: when ``clip_length > 0`` and the method does not stream, run it on
            overlapping clips and stitch the tracks (:class:`~vidseg.inference.ClipStitchingStream`),
            so memory stays bounded; stride 0 means ``clip_length // 2`` (clips share half their frames).
    """

    def __init__(
        self,
        model: nn.Module,
        inference: Any,
        *,
        device: str | torch.device = "auto",
        classes: Sequence[str] | None = None,
        label_to_category_id: Sequence[int] | None = None,
        min_size: int = 360,
        max_size: int | None = 640,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        input_format: str = "RGB",
        score_threshold: float = 0.0,
        topk: int | None = None,
        cache_size: int = 16,
        clip_length: int = 0,
        clip_stride: int = 0,
    ) -> None:
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        if clip_length > 0 and not supports_streaming(inference):
            inference = ClipStitchingStream(inference, clip_length, clip_stride or max(1, clip_length // 2))
            cache_size = max(cache_size, clip_length)
        # A clip-based stream (DeVIS: ``num_frames`` = T) re-reads up to T decoded frames for its last clip:
        # a cache that holds them never decodes the video a second time.
        clip = getattr(inference, "num_frames", 0)
        cache_size = max(cache_size, clip if isinstance(clip, int) else 0)
        self.inference = inference
        self.classes = list(classes) if classes is not None else None
        self.label_to_category_id = list(label_to_category_id) if label_to_category_id is not None else None
        self.min_size, self.max_size = int(min_size), max_size
        self.pixel_mean, self.pixel_std, self.input_format = list(pixel_mean), list(pixel_std), input_format
        self.score_threshold = float(score_threshold)
        self.topk = topk if topk is None or topk > 0 else None
        self.cache_size = cache_size

    @property
    def streaming(self) -> bool:
        """True when the method streams (bounded memory); False when it runs on the whole video."""
        return supports_streaming(self.inference)

    @classmethod
    def from_config(
        cls, cfg: Any, weights: str | None = None, *, device: str | None = None, **kwargs: Any
    ) -> VideoPredictor:
        """Build the model of ``cfg`` (``vidseg.models.build_model``), load ``weights`` (default
        ``MODEL.WEIGHTS``; empty: random initialisation, with a warning) and take the test resize, pixel
        statistics and class names (``DATASETS.TEST[0]``, else ``DATASETS.TRAIN[0]``) from the config.
        ``kwargs`` override constructor arguments."""
        from vidseg.inference.build import build_predictor_kwargs

        return cls(**build_predictor_kwargs(cfg, weights, device=device, **kwargs))

    # ------------------------------------------------------------------------------------------ state
    def init_state(
        self, source: str | Path | Sequence[Any], *, video_id: int = 0, max_frames: int | None = None
    ) -> InferenceState:
        """Open ``source`` lazily: a video file (only its header and first frame are decoded), a folder of
        JPEG/PNG frames, a list of frame files or a list of ``uint8 [H, W, 3]`` RGB arrays. ``max_frames``
        keeps only the first frames. Raises ``DatasetError`` naming a missing or unreadable source."""
        src = open_source(source, max_frames=max_frames, cache_size=self.cache_size)
        first = src[0]
        h, w = int(first.shape[0]), int(first.shape[1])
        size = shortest_edge_size(h, w, self.min_size, self.max_size)
        name = getattr(src, "name", "") or "video"
        frames = VideoFrames(
            src, size, self.pixel_mean, self.pixel_std, self.input_format, expected_size=(h, w), video=name
        )
        item = VideoItem(int(video_id), None, frames, (h, w), size)
        return InferenceState(item, src, name, float(getattr(src, "fps", DEFAULT_FPS)))

    # ------------------------------------------------------------------------------------------ running
    def propagate(self, state: InferenceState) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Yield ``(frame_idx, track_ids [N], masks bool [N, H, W])`` for every frame, in order.

        Track summaries (label, score) are kept in ``state.tracks``. Tracks scoring below
        ``score_threshold`` are left out (streaming methods: per-frame scores; others: track scores).
        """
        for out in self.propagate_outputs(state):
            yield out.frame_idx, out.track_ids, out.masks

    def propagate_outputs(self, state: InferenceState) -> Iterator[FrameOutput]:
        """Like :meth:`propagate`, but yields whole :class:`FrameOutput` objects (with per-frame scores and
        labels)."""
        if state.frames_done:
            raise PredictorError(f"{state.name}: this state was already propagated; call init_state again")
        n = state.num_frames
        with torch.no_grad():
            if self.streaming:
                outputs = self._stream_outputs(state)
            else:
                outputs = self._whole_video_outputs(state)
            for out in outputs:
                self._check_output(state, out)
                keep = [i for i, s in enumerate(out.scores) if s >= self.score_threshold]
                if len(keep) != len(out.track_ids):
                    out = FrameOutput(
                        out.frame_idx,
                        [out.track_ids[i] for i in keep],
                        out.masks[keep],
                        [out.scores[i] for i in keep],
                        [out.labels[i] for i in keep],
                    )
                for tid, score, label in zip(out.track_ids, out.scores, out.labels):
                    summary = state.tracks.get(tid)
                    if summary is None:
                        summary = TrackSummary(tid, label, score, out.frame_idx, out.frame_idx)
                        state.tracks[tid] = summary
                    summary.update(out.frame_idx, score, label)
                state.frames_done += 1
                yield out
        if state.frames_done != n:
            raise PredictorError(
                f"{state.name}: the inference of {type(self.inference).__name__} produced "
                f"{state.frames_done} frames for a video of {n}"
            )

    def _stream_outputs(self, state: InferenceState) -> Iterator[FrameOutput]:
        """The method's stream; a :class:`VideoResult` it returns at the end (the final correction of the
        protocol) becomes ``state.result`` and replaces the running track summaries."""
        final = yield from self.inference.stream(self.model, state.video)
        if isinstance(final, VideoResult):
            state.result = final
            summaries = {}
            for tr in final.tracks:
                old = state.tracks.get(tr.track_id)
                summary = TrackSummary(tr.track_id, tr.label, tr.score, -1, -1, final=True)
                if old is not None:
                    summary.first_frame, summary.last_frame = old.first_frame, old.last_frame
                    summary.num_frames = old.num_frames
                summaries[tr.track_id] = summary
            state.tracks.clear()
            state.tracks.update(summaries)

    def _whole_video_outputs(self, state: InferenceState) -> Iterator[FrameOutput]:
        # Memory grows with the video here: the method sees all frames at once.
        result = self._select(self.inference(self.model, state.video))
        ids = assign_track_ids(result)
        for tid, tr in zip(ids, result.tracks):
            tr.track_id = tid
            state.tracks[tid] = TrackSummary(tid, tr.label, tr.score, -1, -1, final=True)
        state.result = result
        return frames_from_result(result, state.num_frames, ids)

    def _check_output(self, state: InferenceState, out: FrameOutput) -> None:
        if out.frame_idx != state.frames_done:
            raise PredictorError(
                f"{state.name}: {type(self.inference).__name__} yielded frame {out.frame_idx} where frame "
                f"{state.frames_done} was expected (frames must come in order, once each)"
            )
        if tuple(out.masks.shape[-2:]) != tuple(state.orig_size):
            raise PredictorError(
                f"{state.name}: frame {out.frame_idx}: masks are {list(out.masks.shape[-2:])}, "
                f"expected the original size {list(state.orig_size)}"
            )

    def _select(self, result: VideoResult) -> VideoResult:
        """Tracks at or above the threshold, best first, at most ``topk``."""
        tracks = sorted(result.tracks, key=lambda t: -t.score)
        tracks = [t for t in tracks if t.score >= self.score_threshold]
        if self.topk is not None:
            tracks = tracks[: self.topk]
        return VideoResult(result.video_id, result.height, result.width, tracks)

    def predict(
        self,
        source: str | Path | Sequence[Any],
        *,
        video_id: int = 0,
        max_frames: int | None = None,
        progress: bool = True,
        state: InferenceState | None = None,
    ) -> VideoResult:
        """The whole :class:`VideoResult` of ``source``: tracks with per-frame compressed RLE masks, best
        first, at most ``topk``, all at or above ``score_threshold``. Pass ``state`` to reuse one made by
        :meth:`init_state` (``source`` is then ignored)."""
        if state is None:
            state = self.init_state(source, video_id=video_id, max_frames=max_frames)
        n = state.num_frames
        h, w = state.orig_size
        if state.frames_done:
            raise PredictorError(f"{state.name}: this state was already propagated; call init_state again")
        if not self.streaming:
            with tqdm(total=n, desc="predict", unit="frame", disable=not progress, leave=False) as bar:
                with torch.no_grad():
                    for _ in self._whole_video_outputs(state):
                        pass  # the result is complete once the first output exists; nothing to decode
                    state.frames_done = n
                bar.update(n)
            return state.result
        # Only compact RLEs are kept per frame, so memory grows with the mask area, not with pixels x frames.
        rles: dict[int, list] = {}
        frame_scores: dict[int, list] = {}
        # A stream that announces its own final result (DeVIS) needs no summary: encoding every mask again
        # would cost about 0.6 ms per track and frame at 360x640.
        summarise = not getattr(self.inference, "stream_returns_result", False)
        it = tqdm(self.propagate_outputs(state), total=n, desc="predict", unit="frame", disable=not progress)
        for out in it:
            if not summarise:
                continue
            for tid, m, score in zip(out.track_ids, out.masks, out.scores):
                rles.setdefault(tid, [None] * n)[out.frame_idx] = encode_rle(m.numpy())
                frame_scores.setdefault(tid, [None] * n)[out.frame_idx] = float(score)
        if state.result is not None:  # the stream's own final tracks (DeVIS: the whole-video policies)
            state.result = self._select(state.result)
            return state.result
        if not summarise:
            raise PredictorError(
                f"{state.name}: {type(self.inference).__name__} sets stream_returns_result but its stream "
                "returned no VideoResult"
            )
        tracks = [
            Track(state.tracks[tid].score, state.tracks[tid].label, masks, frame_scores[tid], track_id=tid)
            for tid, masks in rles.items()
        ]
        state.result = self._select(VideoResult(state.video.video_id, h, w, tracks))
        return state.result

    # ------------------------------------------------------------------------------------------ outputs
    def category_ids(self, result: VideoResult) -> list[int] | dict[int, int]:
        """``label -> dataset category id`` for the results JSON (``label + 1`` without dataset metadata)."""
        if self.label_to_category_id is not None:
            return self.label_to_category_id
        return {t.label: t.label + 1 for t in result.tracks}


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise PredictorError(f"device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictorError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    return dev
