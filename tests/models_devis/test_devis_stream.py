"""DeVIS true streaming (``ClipInference.stream``): frames leave as soon as no later clip covers them, read
one clip at a time, with bounded tracker memory; the generator's return value is the evaluation's result."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vidseg.data.frame_sampling import overlapping_clips
from vidseg.inference import FrameOutput, supports_streaming
from vidseg.models import load_config
from vidseg.models.devis.build import build_devis
from vidseg.models.devis.clip_inference import ClipInference
from vidseg.structures.masks import decode_segmentation

T, S = 3, 2  # the tiny config's clip length and TEST.CLIP_TRACKING.STRIDE


class _Counting(nn.Module):
    """The model, counting its calls (one per clip)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, batch):
        self.calls += 1
        return self.model(batch)


class _Frames:
    """Preprocessed frames that record which frames were read."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.read = x, set()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        self.read.add(int(i))
        return self.x[i]


def _video(n: int, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    frames = _Frames(torch.randn(n, 3, 40, 56, generator=g))
    return SimpleNamespace(video_id=7, frames=frames, orig_size=(60, 84), image_size=(40, 56), length=n)


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    cfg = load_config("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "2", "TEST.NUM_OUT", "4"])
    b = build_devis(cfg)
    assert b.inference.num_frames == T and b.inference.stride == S
    return b


def _drain(gen):
    """All outputs of a stream generator and its return value."""
    outs = []
    while True:
        try:
            outs.append(next(gen))
        except StopIteration as stop:
            return outs, stop.value


def test_each_frame_leaves_as_soon_as_no_later_clip_covers_it(bundle):
    n = 8  # clips start at 0, 2, 4 and a last one at 5: frames 0-1 leave after clip 1, 2-3 after 2, 4 after 3
    clips = overlapping_clips(n, T, S)
    assert [c.start for c in clips] == [0, 2, 4, 5]
    model, video = _Counting(bundle.model), _video(n)
    inference = bundle.inference
    assert supports_streaming(inference)
    calls_at, read_at = [], []
    outs = []
    for out in inference.stream(model, video):
        assert isinstance(out, FrameOutput)
        calls_at.append(model.calls)
        read_at.append(max(video.frames.read))
        outs.append(out)
    assert [o.frame_idx for o in outs] == list(range(n))
    # frame f leaves after the first clip whose successor starts past it; the last clips' frames at the end
    expected = [next(k + 1 for k in range(len(clips)) if k + 1 == len(clips) or clips[k + 1].start > f)
                for f in range(n)]  # fmt: skip
    assert calls_at == expected == [1, 1, 2, 2, 3, 4, 4, 4]
    assert calls_at[0] < len(clips)  # the first frame came before the last clip ran
    assert read_at[0] == T - 1  # only the first clip's frames were read by then (lazy)


def test_stream_returns_the_evaluation_result_and_frames_agree_with_it(bundle):
    n = 8
    model = bundle.model
    whole = bundle.inference(model, _video(n))
    outs, final = _drain(bundle.inference.stream(model, _video(n)))
    assert final is not None and final.video_id == 7 and (final.height, final.width) == (60, 84)
    assert [(t.track_id, t.score, t.label, t.masks, t.frame_scores) for t in final.tracks] == [
        (t.track_id, t.score, t.label, t.masks, t.frame_scores) for t in whole.tracks
    ]
    assert final.tracks
    # every frame output of a surviving track is that track's final mask and frame score
    by_id = {t.track_id: t for t in final.tracks}
    for out in outs:
        assert out.masks.dtype == torch.bool and tuple(out.masks.shape[1:]) == (60, 84)
        for tid, m, score in zip(out.track_ids, out.masks, out.scores):
            if tid in by_id:
                tr = by_id[tid]
                assert torch.equal(torch.from_numpy(decode_segmentation(tr.masks[out.frame_idx], 60, 84)), m)
                assert tr.frame_scores[out.frame_idx] == score
    # and every non-empty final mask was streamed on its frame
    for tr in final.tracks:
        for f, rle in enumerate(tr.masks):
            if rle is not None and decode_segmentation(rle, 60, 84).any():
                assert tr.track_id in outs[f].track_ids


def test_filters_are_final_only_at_the_end(bundle):
    """MIN_TRACK_SCORE is a whole-video policy: a streamed track can be missing from the final result."""
    n = 6
    kwargs = {**bundle.inference.tracker_kwargs, "min_track_score": 2.0}
    strict = ClipInference(T, bundle.inference.size_divisibility, S, kwargs)
    outs, final = _drain(strict.stream(bundle.model, _video(n)))
    assert len(outs) == n and any(o.track_ids for o in outs)
    assert final.tracks == []  # no mean score reaches 2


def test_tracker_memory_stays_within_the_overlap(bundle):
    held = []

    class Watched(ClipInference):
        def tracker(self, *a, **k):
            self.last = super().tracker(*a, **k)
            return self.last

    inference = Watched(T, bundle.inference.size_divisibility, S, bundle.inference.tracker_kwargs)
    for n in (9, 30):
        gen = inference.stream(bundle.model, _video(n, seed=n))
        for _ in gen:
            tr = inference.last
            # soft masks: only frames a later clip covers again; bool masks: only frames about to leave
            per_track = max((len(t.soft) for t in tr.tracks), default=0)
            held.append((n, per_track, len(tr._released)))
    # the same bounds for 9 and 30 frames: held masks do not grow with the video's length
    assert {n for n, _, _ in held} == {9, 30}
    assert max(p for _, p, _ in held) <= T - 1  # a last clip overlapping more keeps up to T - 1
    assert max(r for _, _, r in held) <= T
