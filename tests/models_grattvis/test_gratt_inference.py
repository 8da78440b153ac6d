"""GRAtt-VIS online inference (grattvis.md §5): scoring and top-k, the mask score, original-size masks, the
streamed result against a whole-video reference of the official code, and memory that does not grow with the
video (bytes held in the state, not a clock). The models here are fakes with the ``init_state`` /
``online_step`` / ``preprocess`` API, so these tests do not depend on the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.data.video_dataset import VideoFrames, VideoItem
from vidseg.inference import supports_streaming
from vidseg.models.grattvis.inference import (
    GRAttVISInference,
    encode_rles,
    rles_from_run_boundaries,
)
from vidseg.structures.clip_batch import pad_frames
from vidseg.structures.masks import decode_segmentation, encode_rle

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


class ScriptedModel(nn.Module):
    """Returns the given per-frame ``(logits [Q, K+1], embed [Q, C], features [C, h, w])`` in order."""

    def __init__(self, frames: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.frames = frames
        self.anchor = nn.Parameter(torch.zeros(1))  # the inference reads the device from the parameters

    def init_state(self, batch_size: int = 1) -> dict:
        return {"t": 0}

    def online_step(self, images: torch.Tensor, state: dict) -> tuple[dict, dict]:
        logits, embed, feats = self.frames[state["t"]]
        assert tuple(feats.shape[-2:]) == (images.shape[-2] // 4, images.shape[-1] // 4)
        out = {"pred_logits": logits[None], "pred_mask_embed": embed[None], "mask_features": feats[None]}
        return {**out, "gates": None}, {"t": state["t"] + 1}


class FakeGRAtt(nn.Module):
    """Deterministic random outputs that depend on the frame and on the propagated state."""

    def __init__(self, q: int = 8, k: int = 3, c: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.q, self.k = q, k
        self.proj = nn.Parameter(torch.randn(c, 3, generator=g))
        self.query = nn.Parameter(torch.randn(q, c, generator=g))
        self.seed = seed
        self.outputs: list[dict] = []  # every step's output, for the reference

    def init_state(self, batch_size: int = 1) -> dict:
        return {"q": self.query[None].expand(batch_size, -1, -1), "t": 0}

    def online_step(self, images: torch.Tensor, state: dict) -> tuple[dict, dict]:
        g = torch.Generator().manual_seed(self.seed * 1000 + state["t"])
        pooled = F.avg_pool2d(images, 4)  # [B, 3, H/4, W/4]
        feats = torch.einsum("dc,bchw->bdhw", self.proj, pooled)
        feats[:, 0] = 1.0  # with a strongly negative embedding there, half of the queries are background
        q = torch.tanh(
            state["q"] + torch.randn(state["q"].shape, generator=g) + pooled.mean((1, 2, 3))[:, None, None]
        )
        logits = 2 * torch.randn(q.shape[0], self.q, self.k + 1, generator=g) + q[..., :1]
        embed = 3 * q
        embed[:, ::2, 0] = -20.0  # no positive mask logit anywhere: the inference's shortcut for them
        out = {"pred_logits": logits, "pred_mask_embed": embed, "mask_features": feats, "gates": None}
        self.outputs.append(out)
        return out, {"q": q, "t": state["t"] + 1}

    def preprocess(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        padded, _ = pad_frames([(frames.float() - mean) / std], 32)
        return padded[0], tuple(frames.shape[-2:])


def make_video(n: int, orig: tuple[int, int], image: tuple[int, int], seed: int = 0) -> VideoItem:
    rng = np.random.default_rng(seed)
    raw = [rng.integers(0, 256, (*orig, 3), dtype=np.uint8) for _ in range(n)]
    return VideoItem(7, None, VideoFrames(raw, image, MEAN, STD, expected_size=orig), orig, image)


def const_frame(probs: list[list[float]], embed: list[float], hw: tuple[int, int] = (8, 8)) -> tuple:
    """Logits whose softmax is ``probs`` [Q, K+1]; features all ones, so a query's mask logit is its embed."""
    logits = torch.tensor(probs, dtype=torch.float64).log().float()
    return logits, torch.tensor(embed)[:, None], torch.ones(1, *hw)


def by_score(result):
    """Tracks by descending score (the official ``topk(sorted=False)`` order is not by score)."""
    return sorted(result.tracks, key=lambda t: -t.score)


def masks_of(track) -> np.ndarray:
    return np.stack([decode_segmentation(r, *r["size"]) for r in track.masks])


# ---------------------------------------------------------------------------------------------- by hand
def test_scores_topk_and_a_query_with_two_labels_by_hand():
    # Q=3, K=2, T=2; the last column is no-object.
    frames = [
        const_frame([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.05, 0.05, 0.9]], [2.0, 1.0, -3.0]),
        const_frame([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.05, 0.05, 0.9]], [-1.0, 1.0, -3.0]),
    ]
    video = make_video(2, (20, 28), (20, 28))
    inf = GRAttVISInference(num_classes=2, top_k=3)
    result = inf(ScriptedModel(frames), video)
    tracks = by_score(result)
    s2, s1 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))
    # Max over frames: q0 -> (0.6, 0.7), q1 -> (0.5, 0.1), q2 -> (0.05, 0.05). Query 0 is foreground on
    # frame 0 only, so its mean foreground probability is sigma(2) (frame 1 adds nothing: sigma(-1) < 0.5).
    assert [t.label for t in tracks] == [1, 0, 0]
    assert [t.score for t in tracks] == pytest.approx([0.7 * s2, 0.6 * s2, 0.5 * s1], rel=1e-5)
    assert sorted(t.track_id for t in tracks) == [1, 2, 3]
    m0 = masks_of(tracks[0])
    assert m0.shape == (2, 20, 28) and m0[0].all() and not m0[1].any()
    assert (masks_of(tracks[1]) == m0).all()  # the same query with its second label
    assert masks_of(tracks[2]).all()
    assert result.video_id == 7 and (result.height, result.width) == (20, 28)


def test_top_k_larger_than_the_pairs_returns_every_pair():
    frames = [const_frame([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], [1.0, 1.0])]
    result = GRAttVISInference(num_classes=2, top_k=10)(
        ScriptedModel(frames), make_video(1, (20, 28), (20, 28))
    )
    assert len(result.tracks) == 4
    s1 = 1 / (1 + math.exp(-1))
    assert [t.score for t in by_score(result)] == pytest.approx(
        [0.6 * s1, 0.3 * s1, 0.2 * s1, 0.1 * s1], rel=1e-5
    )
    assert [t.label for t in by_score(result)] == [0, 1, 1, 0]


def test_mask_score_is_the_mean_foreground_probability_over_frames_and_pixels():
    p = [[0.9, 0.1]]
    # Foreground everywhere on frames 0 and 1 (sigma 2, sigma 1); frame 2 at logit 0 (sigma = 0.5, not > 0.5)
    # and frame 3 background add nothing. Every frame has the same 20 x 28 pixels.
    frames = [const_frame(p, [e]) for e in (2.0, 1.0, 0.0, -4.0)]
    result = GRAttVISInference(num_classes=1, top_k=1)(
        ScriptedModel(frames), make_video(4, (20, 28), (20, 28))
    )
    mean_fg = (1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(-1))) / 2
    assert result.tracks[0].score == pytest.approx(0.9 * mean_fg, rel=1e-5)
    # The binary mask is logit > 0: frame 2 (logit exactly 0) is empty.
    assert masks_of(result.tracks[0]).reshape(4, -1).all(1).tolist() == [True, True, False, False]


def test_a_query_never_in_the_foreground_scores_zero():
    frames = [const_frame([[0.9, 0.1]], [-1.0])]
    result = GRAttVISInference(num_classes=1, top_k=1)(
        ScriptedModel(frames), make_video(1, (20, 28), (20, 28))
    )
    assert result.tracks[0].score == pytest.approx(0.0, abs=1e-6)


def test_padding_is_cropped_before_the_mask_score_and_masks_are_at_the_original_size():
    # The image is the left 16 columns of a 32-wide padded input: the padding's strong foreground must not
    # count. Features at /4: the image part at logit 2 (columns 0..2 of 8; column 3 blends into the
    # padding), the padding at logit 9.
    feats = torch.full((1, 8, 8), 9.0)
    feats[..., :4] = 2.0
    frames = [(torch.tensor([[0.9, 0.1]]).log(), torch.ones(1, 1), feats)]
    video = make_video(1, (40, 32), (20, 16))  # originals twice the resized size
    result = GRAttVISInference(num_classes=1, top_k=1)(ScriptedModel(frames), video)
    m = masks_of(result.tracks[0])
    assert m.shape == (1, 40, 32) and m.all()
    # Columns 0..13 of the 16 are exactly sigma(2) (bilinear between two equal /4 values); 14, 15 mix in 9.
    up = F.interpolate(feats[None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0, :20, :16]
    assert torch.allclose(up[:, :14], torch.tensor(2.0)) and (up[:, 14:] > 2).all()
    assert result.tracks[0].score == pytest.approx(0.9 * up.sigmoid().mean().item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------- reference
def official_reference(model: FakeGRAtt, video: VideoItem, num_classes: int, top_k: int) -> dict:
    """A straightforward whole-video implementation of grattvis.md §5, as the official code: every frame's
    outputs stacked, then scored; masks per frame of the top-k queries."""
    state = model.init_state(1)
    cls, emb, feats = [], [], []
    for t in range(video.length):
        frame = video.frames.get([t])
        padded, _ = pad_frames([frame], 32)
        out, state = model.online_step(padded[0], state)
        cls.append(out["pred_logits"])
        emb.append(out["pred_mask_embed"])
        feats.append(out["mask_features"])
    interim = tuple(padded.shape[-2:])
    image = tuple(video.image_size)
    mask_cls, mask_embed = torch.cat(cls), torch.cat(emb)  # [T, Q, K+1], [T, Q, C]
    labels = torch.arange(num_classes).unsqueeze(0).repeat(mask_cls.shape[1], 1).flatten(0, 1)
    scores = F.softmax(mask_cls, dim=-1)[:, :, :-1].max(dim=0)[0]
    scores, idx = scores.flatten().topk(top_k, sorted=False)
    labels = labels[idx]
    queries = torch.div(idx, num_classes, rounding_mode="floor")
    mask_embed = mask_embed[:, queries]
    num, den = torch.zeros(len(idx)), torch.zeros(len(idx))
    masks = []
    for t in range(len(feats)):
        m = torch.einsum("qc,tchw->qthw", mask_embed[t], feats[t])
        m = F.interpolate(m, size=interim, mode="bilinear", align_corners=False)[:, :, : image[0], : image[1]]
        soft = m.sigmoid()
        hard = soft > 0.5
        num += (soft.flatten(1) * hard.flatten(1)).sum(1)
        den += hard.flatten(1).sum(1)
        masks.append(
            F.interpolate(m, size=tuple(video.orig_size), mode="bilinear", align_corners=False) > 0.0
        )
    return {
        "pred_scores": (scores * (num / (den + 1e-6))).tolist(),
        "pred_labels": labels.tolist(),
        "pred_masks": torch.cat(masks, dim=1),  # [k, T, H0, W0]
    }


@pytest.mark.parametrize(
    "orig, image, k", [((45, 61), (30, 40), 5), ((36, 36), (36, 36), 5), ((45, 61), (30, 40), 24)]
)
def test_streamed_and_whole_results_equal_the_official_whole_video_reference(orig, image, k):
    n = 6  # k = 24: every (query, class) pair of the 8 queries and 3 classes
    video = make_video(n, orig, image, seed=3)
    ref = official_reference(FakeGRAtt(seed=1), video, 3, k)
    inf = GRAttVISInference(num_classes=3, top_k=k)
    result = inf(FakeGRAtt(seed=1), video)
    # The same topk(sorted=False) call as the official code: the same pairs in the same order.
    assert [t.label for t in result.tracks] == ref["pred_labels"]
    assert [t.score for t in result.tracks] == pytest.approx(ref["pred_scores"], rel=1e-5, abs=1e-7)
    for j, tr in enumerate(result.tracks):
        assert (masks_of(tr) == ref["pred_masks"][j].numpy()).all()
    assert sorted(t.track_id for t in result.tracks) == list(range(1, k + 1))
    if k == 24:  # the background queries (mask score 0) and the others are all there
        assert sum(t.score == 0 for t in result.tracks) == 12

    assert supports_streaming(inf)
    gen = inf.stream(FakeGRAtt(seed=1), video)
    outs = []
    try:
        while True:
            outs.append(next(gen))
    except StopIteration as stop:
        final = stop.value  # the protocol's final result: __call__'s
    assert inf.stream_returns_result and final == result
    assert [o.frame_idx for o in outs] == list(range(n))
    for o in outs:
        assert o.track_ids == list(range(1, k + 1)) and o.masks.dtype == torch.bool
        assert tuple(o.masks.shape) == (k, *orig)
        assert o.labels == ref["pred_labels"]
        assert o.scores == pytest.approx(ref["pred_scores"], rel=1e-5, abs=1e-7)
        assert (o.masks.numpy() == ref["pred_masks"][:, o.frame_idx].numpy()).all()


def test_raw_frames_are_resized_shortest_edge_and_preprocessed_by_the_model():
    raw = torch.randint(0, 256, (3, 3, 48, 96), generator=torch.Generator().manual_seed(0)).float()
    inf = GRAttVISInference(num_classes=3, top_k=4, min_size_test=24, max_size_test=40)
    model = FakeGRAtt(seed=2)
    result = inf(model, raw)
    assert (result.height, result.width) == (48, 96)
    assert all(len(t.masks) == 3 and t.masks[0]["size"] == [48, 96] for t in result.tracks)
    # 48x96 -> shorter side 24 would make the long side 48 > 40: capped to 20 x 40, padded to 32 x 64.
    assert tuple(model.outputs[0]["mask_features"].shape[-2:]) == (8, 16)
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        inf(model, raw[0])
    # uint8 frames go through PIL bilinear, the resize of the dataset's VideoItem: the same result.
    frames = raw.to(torch.uint8)
    item = VideoItem(
        0,
        None,
        VideoFrames([f.permute(1, 2, 0).numpy() for f in frames], (20, 40), MEAN, STD),
        (48, 96),
        (20, 40),
    )
    a, b = inf(FakeGRAtt(seed=2), frames), inf(FakeGRAtt(seed=2), item)
    assert [t.score for t in a.tracks] == pytest.approx([t.score for t in b.tracks], rel=1e-6)
    assert [t.masks for t in a.tracks] == [t.masks for t in b.tracks]


def test_bad_constructor_arguments_name_the_setting():
    with pytest.raises(ValueError, match="num_classes"):
        GRAttVISInference(num_classes=0)
    with pytest.raises(ValueError, match="DETECTIONS_PER_IMAGE"):
        GRAttVISInference(num_classes=3, top_k=0)


def test_the_real_tiny_model_matches_the_reference():
    from vidseg.models import build_model, load_config

    torch.manual_seed(0)
    cfg = load_config("quickstart/grattvis_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"])
    bundle = build_model(cfg)
    model = bundle.model.eval()
    video = make_video(3, (48, 70), (64, 93), seed=5)
    assert isinstance(bundle.inference, GRAttVISInference) and bundle.inference.top_k == 10
    with torch.no_grad():
        ref = official_reference(model, video, 2, 10)
    result = bundle.inference(model, video)
    assert [t.label for t in result.tracks] == ref["pred_labels"]
    assert [t.score for t in result.tracks] == pytest.approx(ref["pred_scores"], rel=1e-5, abs=1e-7)
    assert max(t.score for t in result.tracks) > 0
    for j, tr in enumerate(result.tracks):
        assert (masks_of(tr) == ref["pred_masks"][j].numpy()).all()


# ---------------------------------------------------------------------------------------------- memory
def test_the_state_does_not_grow_with_the_video_beyond_the_rles():
    inf = GRAttVISInference(num_classes=3, top_k=5)
    short = inf.run(FakeGRAtt(seed=4), make_video(10, (32, 32), (32, 32)))
    long = inf.run(FakeGRAtt(seed=4), make_video(100, (32, 32), (32, 32)))
    assert short.num_frames == 10 and long.num_frames == 100
    # The tensors held are the [Q, K] running max and two [Q] sums, whatever the length.
    assert short.tensor_bytes() == long.tensor_bytes() == (8 * 3 + 2 * 8) * 4
    # Besides, one compressed RLE per query and frame: far less than a frame's [C, H/4, W/4] features
    # (what the official code keeps per frame), let alone the [Q, H0, W0] masks.
    per_frame = long.rle_bytes() / 100
    assert per_frame < 8 * 32 * 32 / 4  # < a quarter of the frame's bool masks
    assert long.rle_bytes() <= 10 * short.rle_bytes() * 1.5


# ---------------------------------------------------------------------------------------------- RLE
def test_run_boundary_rles_equal_pycocotools():
    g = torch.Generator().manual_seed(0)
    masks = F.interpolate(torch.randn(6, 1, 5, 7, generator=g), size=(23, 31), mode="bilinear")[:, 0] > 0
    masks[0] = True
    masks[1] = False
    masks[2, 0, 0] = True  # the first run of zeros is empty
    masks[3, -1, -1] = True
    expected = [encode_rle(m) for m in masks.numpy()]
    assert rles_from_run_boundaries(masks) == expected
    assert encode_rles(masks) == expected
