"""Online inference of GRAtt-VIS (grattvis.md §5): one frame at a time, memory bounded by per-frame RLEs.

The official ``Grattvis.inference`` keeps every frame's stride-4 mask features ``[256, H/4, W/4]`` until the
video ends (its comment: OVIS needs a 32 GB GPU), because the tracks are only known then: a track's class
score is a *max over frames*, so any query can still enter the top-k at the last frame. Here nothing
frame-sized outlives its frame. After each frame's detector + head step the frame's contribution is folded in:

- the class probabilities ``p_t = softmax(logits_t)[:, :K]`` into a running max ``[Q, K]`` (the score needs
  only the max);
- for *every* query (any of them may be selected later) the mask ``m = <embed_t[q], F_t>`` is upsampled
  bilinearly to the padded input, cropped to the resized image, and its foreground sums
  ``Σ σ(m)·[σ(m) > 0.5]`` and ``Σ [σ(m) > 0.5]`` are added to running ``[Q]`` sums;
- the cropped logits are upsampled to the original size and the binary mask ``logit > 0`` of every query is
  RLE-encoded at once (on CUDA the run boundaries are found on the device, so only their positions cross to
  the host). A query without a positive stride-4 logit is skipped: bilinear values are convex combinations
  of those, so it has no foreground at any size (exact, and most queries on most frames).

At the video end the top-k (query, class) pairs are chosen from the running max exactly as the official code
(label = idx mod K, query = idx div K: a query can give several tracks), the score is multiplied by the mean
foreground probability, and the chosen queries' stored RLEs are the track masks. Peak memory is therefore the
model's per-frame working set plus ``O(Q·K)`` numbers and the compressed RLEs: it does not grow with the
video's length beyond one RLE per query and frame.

Order of the tracks: the official ``topk(sorted=False)`` order, kept by calling the same on the device the
model runs on. It is deterministic for a given input and device, but it is not by score (torch's CPU kernel
returns its selection partly unordered, and CUDA's kernel need not agree with it), so compare results as
sets or sort them by score. Evaluation does not depend on the order.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util
from torch import nn

from vidseg.data.transforms import resize_clip, resize_image, shortest_edge_size
from vidseg.structures.clip_batch import pad_frames
from vidseg.structures.masks import RLE, decode_segmentation, encode_rle
from vidseg.structures.results import FrameOutput, Track, VideoResult

__all__ = [
    "GRAttVISInference",
    "OnlineVideoState",
    "encode_rles",
    "rles_from_run_boundaries",
]

# The mask-score denominator's epsilon and the foreground threshold of the official code.
_EPS = 1e-6
_FG_PROB = 0.5
# Queries upsampled at once (bounds the per-frame working set, not the result: channels are independent).
_CHUNK = 25


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, h, w]`` -> ``[N, *size]``, bilinear with ``align_corners=False`` (as the official code)."""
    return F.interpolate(m[None], size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[0]


def encode_rles(masks: torch.Tensor) -> list[RLE]:
    """Compressed RLEs (utf-8 counts, as :func:`vidseg.structures.masks.encode_rle`) of bool ``[N, H, W]``.

    On the CPU each mask goes through pycocotools. On an accelerator the run boundaries (where the
    column-major flattened mask changes value) are found on the device and only their positions are copied
    to the host, instead of ``N·H·W`` bytes; pycocotools then compresses the run lengths.
    """
    if masks.device.type == "cpu":
        return [encode_rle(m) for m in masks.numpy()]
    return rles_from_run_boundaries(masks)


def rles_from_run_boundaries(masks: torch.Tensor) -> list[RLE]:
    """:func:`encode_rles` through run boundaries found with tensor ops (on the masks' device); only the
    boundary positions are copied to the host."""
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)  # column-major (Fortran) order, as COCO RLE runs go
    rows, pos = (flat[:, 1:] != flat[:, :-1]).nonzero(as_tuple=True)
    first = flat[:, 0].cpu().numpy() if h * w else np.zeros(n, dtype=bool)
    rows, pos = rows.cpu().numpy(), pos.cpu().numpy() + 1
    out = []
    for i, p in enumerate(np.split(pos, np.searchsorted(rows, np.arange(1, n)))):
        runs = np.diff(np.concatenate([[0], p, [h * w]])).tolist()
        if first[i]:
            runs = [0, *runs]  # RLE counts start with a run of zeros, here an empty one
        rle = mask_util.frPyObjects({"size": [h, w], "counts": runs}, h, w)
        out.append({"size": [int(h), int(w)], "counts": rle["counts"].decode("utf-8")})
    return out


@dataclass
class OnlineVideoState:
    """What :class:`GRAttVISInference` keeps of a video while it runs (nothing frame-sized).

    Attributes:
        max_prob: ``[Q, K]`` running max over frames of ``softmax(logits)[:, :K]``.
        numerator, denominator: ``[Q]`` running sums of ``σ(m)·[σ(m)>0.5]`` and ``[σ(m)>0.5]`` per query.
        counts: per frame, the ``Q`` compressed RLE count strings of every query's binary mask at the
            original size (the strings only: a dict per mask would triple the bytes held).
        orig_size: ``(H0, W0)`` of the video.
    """

    orig_size: tuple[int, int]
    max_prob: torch.Tensor | None = None
    numerator: torch.Tensor | None = None
    denominator: torch.Tensor | None = None
    counts: list[list[str]] = field(default_factory=list)
    _empty: str | None = field(default=None, repr=False)  # the RLE counts of an empty mask

    @property
    def num_frames(self) -> int:
        return len(self.counts)

    def rle(self, t: int, query: int) -> RLE:
        """The compressed RLE of ``query``'s mask on frame ``t``."""
        return {"size": [int(s) for s in self.orig_size], "counts": self.counts[t][query]}

    def add_frame(
        self,
        logits: torch.Tensor,
        embed: torch.Tensor,
        features: torch.Tensor,
        padded_size: tuple[int, int],
        image_size: tuple[int, int],
    ) -> None:
        """Fold in one frame: ``logits [Q, K+1]``, ``embed [Q, C]``, ``features [C, H/4, W/4]``."""
        prob = logits.float().softmax(-1)[:, :-1]
        low = torch.einsum("qc,chw->qhw", embed.float(), features.float())  # [Q, H/4, W/4], small
        q = low.shape[0]
        num = low.new_zeros(q)
        den = low.new_zeros(q)
        if self._empty is None:
            self._empty = encode_rle(np.zeros(self.orig_size, dtype=bool))["counts"]
        counts = [self._empty] * q
        # Bilinear values are convex combinations of the /4 logits, so a query with no positive /4 logit has
        # no pixel with sigma > 0.5 or logit > 0 at any size: it adds 0 to both sums and an empty mask
        # (exact, and most queries of a trained model on most frames).
        active = (low.flatten(1).amax(1) > 0).nonzero().flatten()
        # Active queries in chunks: the full-size logits of 100 queries at 720p would be ~370 MB at once.
        for idx in active.split(_CHUNK) if active.numel() else ():
            m = _upsample(low[idx], padded_size)[:, : image_size[0], : image_size[1]]
            soft = m.sigmoid()
            hard = soft > _FG_PROB
            num[idx] = (soft * hard).flatten(1).sum(1)
            den[idx] = hard.flatten(1).sum(1).float()
            full = m if tuple(m.shape[-2:]) == tuple(self.orig_size) else _upsample(m, self.orig_size)
            for i, r in zip(idx.tolist(), encode_rles(full > 0)):
                counts[i] = r["counts"]
        if self.max_prob is None:
            self.max_prob, self.numerator, self.denominator = prob, num, den
        else:
            self.max_prob = torch.maximum(self.max_prob, prob)
            self.numerator = self.numerator + num
            self.denominator = self.denominator + den
        self.counts.append(counts)

    def tensor_bytes(self) -> int:
        """Bytes of the tensors held (independent of the number of frames)."""
        ts = (self.max_prob, self.numerator, self.denominator)
        return sum(t.numel() * t.element_size() for t in ts if t is not None)

    def rle_bytes(self) -> int:
        """Bytes of the RLE count strings held (one per query and frame)."""
        return sum(len(c) for frame in self.counts for c in frame)


@dataclass
class _Selection:
    scores: list[float]  # final score: max class probability x mean foreground probability
    labels: list[int]
    queries: list[int]


class GRAttVISInference:
    """``inference(model, video) -> VideoResult`` and ``stream(model, video)`` for a GRAtt-VIS model.

    Args:
        num_classes: K (the model's logits are ``[.., K+1]``, the last the no-object class).
        top_k: tracks per video, ``TEST.DETECTIONS_PER_IMAGE`` (10 for YouTube-VIS, 20 for OVIS); at most
            ``Q·K`` are returned.
        min_size_test, max_size_test: ResizeShortestEdge of raw ``[T, 3, H, W]`` 0-255 inputs. A
            ``VideoItem`` comes resized and normalised by its dataset (``INPUT.MIN/MAX_SIZE_TEST``).

    The model API used: ``init_state(batch_size) -> state``; ``online_step(images [1, 3, H, W], state) ->
    (out, state)`` with ``out["pred_logits"] [1, Q, K+1]``, ``out["pred_mask_embed"] [1, Q, C]`` and
    ``out["mask_features"] [1, C, H/4, W/4]``; ``preprocess(frames [T, 3, H, W] 0-255) -> (images, (h, w))``
    for raw inputs. On CUDA the model step runs under fp16 autocast (the official test setting; set
    ``use_amp = False`` to turn it off); the mask arithmetic is float32.
    """

    use_amp: bool = True
    # The stream returns the VideoResult of __call__ at its end (the protocol's final correction), so the
    # predictor takes it as is rather than re-encoding the per-frame masks into a summary.
    stream_returns_result: bool = True

    def __init__(
        self, num_classes: int, top_k: int = 10, min_size_test: int = 360, max_size_test: int = 1333
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"GRAtt-VIS inference: num_classes must be >= 1, got {num_classes}")
        if top_k < 1:
            raise ValueError(
                f"GRAtt-VIS inference: top_k (TEST.DETECTIONS_PER_IMAGE) must be >= 1, got {top_k}"
            )
        self.num_classes = int(num_classes)
        self.top_k = int(top_k)
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test) if max_size_test else None

    # ------------------------------------------------------------------------------------------ running
    @torch.no_grad()
    def run(self, model: nn.Module, video: Any) -> OnlineVideoState:
        """Every frame of ``video`` through ``model``, folded into an :class:`OnlineVideoState`.

        ``video`` is a ``vidseg.data.VideoItem`` (frames read one at a time) or raw frames
        ``[T, 3, H0, W0]`` RGB 0-255 (uint8: resized with PIL bilinear as the official test pipeline; float:
        the antialiased bilinear of ``resize_clip``).
        """
        device = next(model.parameters()).device
        amp = self.use_amp and device.type == "cuda"
        was_training = model.training
        model.eval()
        try:
            state = model.init_state(batch_size=1)
            acc: OnlineVideoState | None = None
            for images, image_size, orig_size in self._frames(model, video):
                images = images.to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    out, state = model.online_step(images, state)
                if acc is None:
                    acc = OnlineVideoState(orig_size)
                acc.add_frame(
                    out["pred_logits"][0],
                    out["pred_mask_embed"][0],
                    out["mask_features"][0],
                    tuple(images.shape[-2:]),
                    image_size,
                )
        finally:
            model.train(was_training)
        if acc is None:
            raise ValueError("GRAtt-VIS inference: the video has no frames")
        return acc

    def _frames(self, model: nn.Module, video: Any) -> Iterator[tuple[torch.Tensor, tuple, tuple]]:
        """``(images [1, 3, H, W] padded to 32, image_size, orig_size)`` per frame, read lazily."""
        if isinstance(video, torch.Tensor):
            if video.ndim != 4 or video.shape[1] != 3:
                raise ValueError(
                    f"GRAtt-VIS inference: raw frames must be [T, 3, H, W], got {list(video.shape)}"
                )
            h0, w0 = (int(s) for s in video.shape[-2:])
            size = shortest_edge_size(h0, w0, self.min_size_test, self.max_size_test)
            for t in range(video.shape[0]):
                if video.dtype == torch.uint8:  # PIL bilinear on uint8, as the official test pipeline
                    img = resize_image(video[t].permute(1, 2, 0).numpy(), size)
                    frame = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()
                else:
                    frame, _ = resize_clip(video[t : t + 1].float(), None, size)
                images, image_size = model.preprocess(frame)
                yield images, tuple(int(s) for s in image_size), (h0, w0)
            return
        orig = tuple(int(s) for s in video.orig_size)
        n = video.length() if callable(getattr(video, "length", None)) else int(video.length)
        for t in range(n):
            frame = video.frames.get([t])  # [1, 3, h, w], normalised by the dataset
            padded, _ = pad_frames([frame], size_divisibility=32)
            yield padded[0], tuple(int(s) for s in frame.shape[-2:]), orig

    def select(self, acc: OnlineVideoState) -> _Selection:
        """The top-k (query, class) pairs of a finished video and their final scores (§5.3-5.5)."""
        q, k = acc.max_prob.shape
        flat = acc.max_prob.flatten()
        # The official call (its order: see the module docstring); k at most the Q*K pairs there are.
        _, idx = flat.topk(min(self.top_k, q * k), sorted=False)
        labels = idx % k
        queries = torch.div(idx, k, rounding_mode="floor")
        mask_score = acc.numerator[queries] / (acc.denominator[queries] + _EPS)
        scores = flat[idx] * mask_score
        return _Selection(scores.tolist(), labels.tolist(), queries.tolist())

    # ------------------------------------------------------------------------------------------ outputs
    def __call__(self, model: nn.Module, video: Any) -> VideoResult:
        """The whole video -> :class:`VideoResult`: ``top_k`` tracks (the official order, see the module
        docstring; ``track_id`` 1..k in that order), each with one RLE per frame (empty frames included, as
        the official results writer does)."""
        acc = self.run(model, video)
        return self._result(acc, self.select(acc), video)

    def _result(self, acc: OnlineVideoState, sel: _Selection, video: Any) -> VideoResult:
        h0, w0 = acc.orig_size
        result = VideoResult(video_id=int(getattr(video, "video_id", 0)), height=h0, width=w0)
        for j, (score, label, query) in enumerate(zip(sel.scores, sel.labels, sel.queries)):
            masks: list[RLE | None] = [acc.rle(t, query) for t in range(acc.num_frames)]
            frame_scores: list[float | None] = [float(score)] * len(masks)
            result.tracks.append(Track(float(score), int(label), masks, frame_scores, track_id=j + 1))
        return result

    def stream(self, model: nn.Module, video: Any) -> Generator[FrameOutput, None, VideoResult]:
        """Per-frame outputs (the ``vidseg.inference`` streaming protocol), then the video's
        :class:`VideoResult` (the same as ``__call__``'s) as the generator's return value.

        The frames are processed online, one at a time, with bounded memory; but a track's score is a max
        over the whole video, so the tracks are only decided at its end: the frames are yielded then, decoded
        one at a time from the stored RLEs. Every frame lists all ``top_k`` tracks (ids 1..k, the order of
        ``__call__``), with their final score and label; a track's mask may be empty on a frame.
        """
        acc = self.run(model, video)
        sel = self.select(acc)
        h0, w0 = acc.orig_size
        ids = list(range(1, len(sel.queries) + 1))
        for t in range(acc.num_frames):
            masks = [decode_segmentation(acc.rle(t, q), h0, w0) for q in sel.queries]
            stacked = (
                torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h0, w0), dtype=torch.bool)
            )
            yield FrameOutput(t, list(ids), stacked, list(sel.scores), list(sel.labels))
        return self._result(acc, sel, video)
