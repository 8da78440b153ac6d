"""vidseg.inference: the streaming video predictor (sam2-style API) and its helpers.

- :class:`VideoPredictor`: ``init_state(source)`` / ``propagate(state)`` / ``predict(source)``;
  ``VideoPredictor.from_config(cfg, weights)``.
- :mod:`~vidseg.inference.protocol`: the optional ``inference.stream(model, video)`` protocol
  (:class:`FrameOutput`), and the adapter for methods that only run on whole videos.
- :mod:`~vidseg.inference.sources`: lazily decoded video files, frame folders, arrays.
- :mod:`~vidseg.inference.writer`: frame-by-frame rendering to mp4.

See docs/inference.md.
"""

from vidseg.inference.predictor import InferenceState, PredictorError, TrackSummary, VideoPredictor
from vidseg.inference.protocol import FrameOutput, StreamingInference, frames_from_result, supports_streaming
from vidseg.inference.sources import StreamingVideoFile, open_source
from vidseg.inference.stitching import ClipStitchingStream
from vidseg.inference.writer import StreamingVideoWriter, render_result_streaming

__all__ = [
    "ClipStitchingStream",
    "FrameOutput",
    "InferenceState",
    "PredictorError",
    "StreamingInference",
    "StreamingVideoFile",
    "StreamingVideoWriter",
    "TrackSummary",
    "VideoPredictor",
    "frames_from_result",
    "open_source",
    "render_result_streaming",
    "supports_streaming",
]
