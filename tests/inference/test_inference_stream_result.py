"""The protocol's final correction: a stream that returns a ``VideoResult`` gives ``predict`` its result."""

from __future__ import annotations

import pytest
import torch
from inference_helpers import N_FRAMES, H, W, moving_square_frames
from torch import nn

from vidseg.inference import FrameOutput, PredictorError, VideoPredictor
from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track, VideoResult


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


class _FinalStream:
    """Streams track 5 on every frame with per-frame score 0.9 and class 1, then returns its own final
    result: track 5 with score 0.25 and class 2 (a whole-video decision) and nothing else."""

    def __init__(self, returns: bool = True, announce: bool = True) -> None:
        self.returns = returns
        self.stream_returns_result = announce

    def __call__(self, model, video):
        raise AssertionError("a streaming method is not run whole")

    def stream(self, model, video):
        h, w = video.orig_size
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[0, :4, :4] = True
        for t in range(video.length):
            yield FrameOutput(t, [5], mask, [0.9], [1])
        if not self.returns:
            return None
        rle = encode_rle(mask[0].numpy())
        return VideoResult(video.video_id, h, w, [Track(0.25, 2, [rle] * video.length, track_id=5)])


@pytest.mark.parametrize("announce", [True, False])
def test_the_streams_final_result_is_the_prediction(announce):
    stream = _FinalStream(announce=announce)
    predictor = VideoPredictor(_Model(), stream, device="cpu", min_size=H, max_size=W)
    state = predictor.init_state(moving_square_frames(), video_id=3)
    result = predictor.predict(state=state, source=None, progress=False)
    assert result is state.result and result.video_id == 3
    assert [(t.track_id, t.score, t.label) for t in result.tracks] == [(5, 0.25, 2)]
    assert len(result.tracks[0].masks) == N_FRAMES
    summary = state.tracks[5]
    assert summary.final and (summary.score, summary.label) == (0.25, 2)
    assert (summary.first_frame, summary.last_frame, summary.num_frames) == (0, N_FRAMES - 1, N_FRAMES)


def test_an_announced_result_that_never_comes_is_an_error():
    predictor = VideoPredictor(_Model(), _FinalStream(returns=False), device="cpu", min_size=H, max_size=W)
    with pytest.raises(PredictorError, match="stream_returns_result"):
        predictor.predict(moving_square_frames(), progress=False)


def test_without_a_final_result_the_frames_are_summarised():
    predictor = VideoPredictor(
        _Model(), _FinalStream(returns=False, announce=False), device="cpu", min_size=H, max_size=W
    )
    result = predictor.predict(moving_square_frames(), progress=False)
    assert [(t.track_id, t.label) for t in result.tracks] == [(5, 1)]
    assert result.tracks[0].score == pytest.approx(0.9)
