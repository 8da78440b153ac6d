"""VideoPredictor: sources, propagate order, streaming protocol, whole-video fallback, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import (
    N_FRAMES,
    BrightStream,
    BrightWhole,
    H,
    W,
    moving_square_frames,
    write_frame_folder,
    write_mp4,
    write_toy_config,
)
from torch import nn

from vidseg.data.errors import DatasetError
from vidseg.inference import PredictorError, VideoPredictor
from vidseg.inference.sources import StreamingVideoFile
from vidseg.models import load_config
from vidseg.structures.masks import decode_segmentation


@pytest.fixture(scope="module")
def toy_predictor(tmp_path_factory) -> VideoPredictor:
    tmp = tmp_path_factory.mktemp("toy")
    cfg = load_config(str(write_toy_config(tmp)), [])
    with pytest.warns(UserWarning, match="randomly initialised"):
        return VideoPredictor.from_config(cfg)


def stream_predictor(**kw) -> VideoPredictor:
    return VideoPredictor(nn.Linear(1, 1), BrightStream(**kw), device="cpu", min_size=48, max_size=96)


def test_propagate_yields_frames_in_order_whole_video(toy_predictor, tmp_path):
    mp4 = write_mp4(tmp_path / "clip.mp4")
    state = toy_predictor.init_state(mp4)
    assert (state.num_frames, state.orig_size, state.name) == (N_FRAMES, (H, W), "clip")
    seen = []
    for frame_idx, track_ids, masks in toy_predictor.propagate(state):
        seen.append(frame_idx)
        assert masks.dtype == torch.bool and tuple(masks.shape) == (len(track_ids), H, W)
        assert len(set(track_ids)) == len(track_ids)
    assert seen == list(range(N_FRAMES))
    assert state.frames_done == N_FRAMES and state.result is not None
    assert set(state.tracks) == {t.track_id for t in state.result.tracks}
    with pytest.raises(PredictorError, match="already propagated"):
        next(toy_predictor.propagate(state))


def test_predict_mp4_folder_and_arrays_agree(toy_predictor, tmp_path):
    a = toy_predictor.predict(write_mp4(tmp_path / "v.mp4"), progress=False)
    b = toy_predictor.predict(write_frame_folder(tmp_path / "frames"), progress=False)
    c = toy_predictor.predict(moving_square_frames(), progress=False)
    for r in (a, b, c):
        assert (r.height, r.width) == (H, W)
        assert 0 < len(r.tracks) <= 5  # MODEL.TOY.TOPK
        assert all(len(t.masks) == N_FRAMES for t in r.tracks)
        assert [t.score for t in r.tracks] == sorted((t.score for t in r.tracks), reverse=True)
    # PNG frames and raw arrays are bit-identical inputs, so the predictions are too.
    assert [t.masks for t in b.tracks] == [t.masks for t in c.tracks]
    assert toy_predictor.init_state(tmp_path / "frames").name == "frames"


def test_topk_threshold_and_max_frames(toy_predictor, tmp_path):
    full = toy_predictor.predict(moving_square_frames(), progress=False)
    toy_predictor.topk, toy_predictor.score_threshold = 2, 0.0
    try:
        r = toy_predictor.predict(moving_square_frames(), max_frames=4, progress=False)
        assert len(r.tracks) == 2 and all(len(t.masks) == 4 for t in r.tracks)
        toy_predictor.topk, toy_predictor.score_threshold = None, 1.01
        assert toy_predictor.predict(moving_square_frames(), progress=False).tracks == []
    finally:
        toy_predictor.topk, toy_predictor.score_threshold = None, 0.0
    assert len(full.tracks) == 5


def test_streaming_protocol_is_lazy_and_aggregates(tmp_path):
    pred = stream_predictor()
    assert pred.streaming
    state = pred.init_state(write_mp4(tmp_path / "s.mp4"))
    assert isinstance(state.source, StreamingVideoFile)
    assert state.source.decoded == 1  # only the first frame (for the size) is decoded up front
    frames = [idx for idx, _, _ in pred.propagate(state)]
    assert frames == list(range(N_FRAMES))
    # Frame t is yielded once frames 0..t are decoded, not after the whole video.
    assert pred.inference.reads == [t + 1 for t in range(N_FRAMES)]
    summary = state.tracks[7]
    assert summary.num_frames == N_FRAMES and (summary.first_frame, summary.last_frame) == (0, N_FRAMES - 1)
    assert summary.score == pytest.approx(0.625)  # mean of 0.5, 0.55, ..., 0.75
    assert summary.label == 1  # label 1 has the larger summed score

    result = stream_predictor().predict(write_mp4(tmp_path / "s2.mp4"), progress=False)
    (track,) = result.tracks
    assert track.track_id == 7 and track.label == 1 and track.frame_scores[0] == pytest.approx(0.5)
    m0 = decode_segmentation(track.masks[0], H, W)
    assert m0[18, 10] and not m0[40, 60]  # the bright square, decoded from the mp4


def test_streaming_threshold_drops_low_frames():
    pred = stream_predictor()
    pred.score_threshold = 0.62  # per-frame scores 0.5 .. 0.75: frames 3, 4, 5 pass
    r = pred.predict(moving_square_frames(), progress=False)
    (track,) = r.tracks
    assert [m is not None for m in track.masks] == [False, False, False, True, True, True]


def test_stream_out_of_order_is_an_error():
    pred = stream_predictor(shuffle=True)
    with pytest.raises(PredictorError, match="frame 5 where frame 0 was expected"):
        pred.predict(moving_square_frames(), progress=False)


def test_bad_sources_name_the_input(toy_predictor, tmp_path):
    with pytest.raises(DatasetError, match="source not found: .*nope.mp4"):
        toy_predictor.init_state(tmp_path / "nope.mp4")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(DatasetError, match="broken.mp4"):
        toy_predictor.init_state(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image frames"):
        toy_predictor.init_state(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"frame 1 of the array source: expected uint8 \[H, W, 3\]"):
        toy_predictor.init_state([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)])
    with pytest.raises(DatasetError, match="frame 1 of the array source is"):
        toy_predictor.init_state([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)])


def test_unknown_device_is_a_clear_error():
    with pytest.raises(PredictorError, match="device"):
        VideoPredictor(nn.Linear(1, 1), BrightStream(), device="tpu:9")
    if not torch.cuda.is_available():
        with pytest.raises(PredictorError, match="CUDA is not available"):
            VideoPredictor(nn.Linear(1, 1), BrightStream(), device="cuda")


def test_clip_stitching_keeps_track_ids_across_clips(tmp_path):
    inf = BrightWhole(second_from=4)
    pred = VideoPredictor(nn.Linear(1, 1), inf, device="cpu", min_size=48, max_size=96, clip_length=3)
    assert pred.streaming  # the whole-input method now streams clip by clip
    state = pred.init_state(write_mp4(tmp_path / "c.mp4"))
    outs = list(pred.propagate(state))
    assert [o[0] for o in outs] == list(range(N_FRAMES))
    # Clips of 3 frames, stride 1 (3 // 2): starts 0..3 -> four calls, none on the whole video.
    assert inf.calls == [3, 3, 3, 3]
    # The bright square is one track through every clip; the corner appears from frame 4 as a new track.
    assert [o[1] for o in outs] == [[1], [1], [1], [1], [1, 2], [1, 2]]
    assert state.tracks[1].label == 2 and state.tracks[2].label == 1
    r = VideoPredictor(
        nn.Linear(1, 1), BrightWhole(), device="cpu", min_size=48, max_size=96, clip_length=4, clip_stride=2
    ).predict(moving_square_frames(), progress=False)
    assert len(r.tracks) == 1 and all(m is not None for m in r.tracks[0].masks)


def test_streaming_video_file_cache_and_backward_seek(tmp_path):
    src = StreamingVideoFile(write_mp4(tmp_path / "r.mp4"), cache_size=2)
    assert len(src) == N_FRAMES and src.fps == pytest.approx(6.0)
    a3 = src[3].copy()
    assert src.decoded == 4 and len(src._cache) == 2  # frames 2, 3 kept: memory bounded by the cache
    assert np.array_equal(src[2], src._cache[2]) and src.decoded == 4  # a cache hit decodes nothing
    with pytest.warns(UserWarning, match="decoding again from the start"):
        a0 = src[0]
    assert src.decoded == 5 and not np.array_equal(a0, a3)
    assert np.array_equal(src[3], a3)
    assert sum(1 for _ in src) == N_FRAMES
    with pytest.raises(IndexError, match="out of range"):
        src[N_FRAMES]
