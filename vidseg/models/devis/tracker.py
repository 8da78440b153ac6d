"""DeVIS multi-cue clip tracker (devis.md §4): stitches per-clip tracks into video tracks.

Model-free: its input is one dict per clip (see :meth:`ClipTracker.update`), so hand-built clips test it.

Memory stays bounded by the clip, not the video: a track keeps soft masks only for the frames a later clip
will cover again (at most T frames); every other frame is RLE-encoded as soon as it leaves that window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from vidseg.data.frame_sampling import InferenceClip, overlapping_clips
from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track

__all__ = ["ClipTracker", "overlap_positions", "mask_iou"]

_FORBIDDEN = 1e6  # cost of a pair of different classes under per-class matching


def overlap_positions(clip: InferenceClip, index: int, num_frames: int, stride: int) -> int:
    """Number of leading positions of the ``index``-th clip whose frames earlier clips already produced.

    Regular clips overlap by ``T - S``; the last clip of a longer video by ``last_real_idx + T - S`` (all
    frames before its new content count as overlap); the first clip by 0.
    """
    if index == 0:
        return 0
    return min(int(clip.last_real_idx) + num_frames - stride, num_frames)


def mask_iou(a: torch.Tensor, b: torch.Tensor, binary: bool = False, frame_average: bool = False) -> float:
    """IoU of two mask volumes ``[O, H, W]`` (probabilities in [0, 1]).

    Default: soft volumetric IoU ``sum(p1*p2) / sum(p1 + p2 - p1*p2)`` over all frames and pixels.
    ``binary``: masks thresholded at 0.5 first (the same value as the IoU of their RLEs).
    ``frame_average``: the IoU of each frame, averaged over the frames.
    """
    a, b = a.float(), b.float()
    if binary:
        a, b = (a > 0.5).float(), (b > 0.5).float()
    inter = a * b
    union = a + b - inter
    if frame_average:
        per = inter.flatten(1).sum(1) / union.flatten(1).sum(1).clamp(min=1e-6)
        return float(per.mean()) if per.numel() else 0.0
    return float(inter.sum() / union.sum().clamp(min=1e-6))


@dataclass
class _VideoTrack:
    """Per-frame attributes of one video track (None where the track has no detection)."""

    n: int
    scores: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    centers: list = field(default_factory=list)
    masks: list = field(default_factory=list)  # RLE once encoded
    soft: dict = field(default_factory=dict)  # frame -> [H, W] probabilities, only inside the next clips
    alive: bool = True
    last_label: int = -1

    def __post_init__(self) -> None:
        for name in ("scores", "labels", "boxes", "centers", "masks"):
            setattr(self, name, [None] * self.n)


class ClipTracker:
    """Links the top-k tracks of successive clips of one video into video tracks.

    Usage: ``tracker = ClipTracker(n, h, w, T, S, ...)``; ``tracker.update(clip_result)`` for each clip of
    ``overlapping_clips(n, T, S)`` in order; ``tracker.finish() -> list[Track]``.

    Args:
        num_video_frames, height, width: the video's length and original size.
        num_frames, stride: clip length T and ``TEST.CLIP_TRACKING.STRIDE`` (overlap ``T - S``).
        mask_cost, class_cost, score_cost, center_cost: weights of the four cues.
        per_class_matching: match only tracks of the same class; unmatched old tracks die, unmatched new
            clip tracks are born.
        binary_mask_iou, frame_average_iou: the IoU variant (default soft volumetric).
        final_class_policy: ``"most_common"`` | ``"score_weighting"``; final_score_policy: ``"mean"`` |
            ``"median"``.
        min_frame_score, min_detections, min_track_score: the final filters.
        keep_released: also keep the binary mask of each frame as it is encoded, until :meth:`pop_frame`
            takes it (streaming; the caller pops every released frame, so at most one clip's frames wait).
    """

    def __init__(
        self,
        num_video_frames: int,
        height: int,
        width: int,
        num_frames: int,
        stride: int,
        mask_cost: float = 1.0,
        class_cost: float = 1.0,
        score_cost: float = 1.0,
        center_cost: float = 0.0,
        per_class_matching: bool = False,
        binary_mask_iou: bool = False,
        frame_average_iou: bool = False,
        final_class_policy: str = "most_common",
        final_score_policy: str = "mean",
        min_frame_score: float = 0.001,
        min_detections: int = 1,
        min_track_score: float = 0.002,
        keep_released: bool = False,
    ) -> None:
        if final_class_policy not in ("most_common", "score_weighting"):
            raise ValueError(f"TEST.CLIP_TRACKING.FINAL_CLASS_POLICY: unknown {final_class_policy!r}")
        if final_score_policy not in ("mean", "median"):
            raise ValueError(f"TEST.CLIP_TRACKING.FINAL_SCORE_POLICY: unknown {final_score_policy!r}")
        self.n, self.height, self.width = int(num_video_frames), int(height), int(width)
        self.t, self.s = int(num_frames), int(stride)
        self.weights = (float(mask_cost), float(class_cost), float(score_cost), float(center_cost))
        self.per_class = bool(per_class_matching)
        self.binary_iou, self.frame_avg = bool(binary_mask_iou), bool(frame_average_iou)
        self.class_policy, self.score_policy = final_class_policy, final_score_policy
        self.min_frame_score, self.min_detections = float(min_frame_score), int(min_detections)
        self.min_track_score = float(min_track_score)
        self.clips = overlapping_clips(self.n, self.t, self.s)
        self.index = 0
        self.tracks: list[_VideoTrack] = []
        self.keep_released = bool(keep_released)
        self._released: dict[int, dict[int, torch.Tensor]] = {}  # frame -> {track index: bool [H, W]}
        self._by_class: dict[int, list[int]] = {}  # per-class: class -> live track indices (birth order)

    # ------------------------------------------------------------------ per clip
    def update(self, clip_result: dict[str, Any]) -> None:
        """Add one clip (the next of ``overlapping_clips(n, T, S)``).

        ``clip_result`` keys (k candidates, T positions): ``"frame_scores"`` ``[T, k]``; ``"labels"`` ``[k]``
        (or ``"frame_labels"`` ``[T, k]``); ``"boxes"`` ``[T, k, 4]`` xyxy pixels; ``"centers"`` ``[T, k, 2]``
        normalised; ``"masks"`` ``[k, T, H, W]`` probabilities at the original size, or ``[u, T, H, W]`` for u
        unique slots with ``"mask_index"`` ``[k]`` into them. Optional ``"clip"`` (the
        :class:`InferenceClip`, checked against the expected layout).
        """
        if self.index >= len(self.clips):
            raise ValueError(f"ClipTracker: more clips than the {len(self.clips)} of a {self.n}-frame video")
        clip = self.clips[self.index]
        given = clip_result.get("clip")
        if given is not None and list(given.indices) != list(clip.indices):
            raise ValueError(
                f"ClipTracker: clip {self.index} covers {given.indices}, expected {clip.indices}"
            )
        dets = _detections(clip_result)
        overlap = overlap_positions(clip, self.index, self.t, self.s)
        if self.index == 0:
            for j in range(dets["k"]):
                self._by_class.setdefault(int(dets["labels"][0, j]), []).append(len(self.tracks))
                self.tracks.append(self._new_track(dets, j, clip, 0))
        else:
            self._stitch(dets, clip, overlap)
        self.index += 1
        self._encode_outside(self._keep_from())

    def _keep_from(self) -> int:
        """First frame a later clip covers (soft masks before it are encoded)."""
        if self.index < len(self.clips):
            return self.clips[self.index].start
        return self.n

    def _positions(self, clip: InferenceClip) -> list[tuple[int, int]]:
        """``(position, frame)`` of the clip's genuine frames (a ping-pong padded clip is cut to n)."""
        real = int(clip.num_real or self.t)
        return [(p, clip.indices[p]) for p in range(min(real, self.t))]

    def _new_track(self, dets: dict, j: int, clip: InferenceClip, first: int) -> _VideoTrack:
        track = _VideoTrack(self.n)
        for p, frame in self._positions(clip)[first:]:
            self._write(track, dets, j, p, frame)
        return track

    def _write(self, track: _VideoTrack, dets: dict, j: int, p: int, frame: int) -> None:
        track.scores[frame] = float(dets["scores"][p, j])
        track.labels[frame] = int(dets["labels"][p, j])
        track.boxes[frame] = [float(v) for v in dets["boxes"][p, j]]
        track.centers[frame] = [float(v) for v in dets["centers"][p, j]]
        track.soft[frame] = dets["masks"][int(dets["mask_index"][j]), p]
        track.masks[frame] = None
        track.last_label = track.labels[frame]

    def _stitch(self, dets: dict, clip: InferenceClip, overlap: int) -> None:
        pos = self._positions(clip)
        over = pos[:overlap]
        alive = [i for i, tr in enumerate(self.tracks) if tr.alive]
        # The cost looks at the last T - S overlap frames only, also for a last clip that overlaps more: the
        # official HungarianInferenceMatcher compares a video track's last ``overlap_w`` frames with the clip
        # track's frames from ``start_idx`` on (src/models/matcher.py: get_last_results/get_first_results).
        cost = self._cost_matrix([self.tracks[i] for i in alive], dets, over[len(over) - (self.t - self.s) :])
        rows, cols = linear_sum_assignment(cost) if cost.size else (np.zeros(0, int), np.zeros(0, int))
        matched_new: set[int] = set()
        matched_old: set[int] = set()
        for a, j in zip(rows.tolist(), cols.tolist()):
            if cost[a, j] >= _FORBIDDEN:
                continue
            track = self.tracks[alive[a]]
            matched_old.add(alive[a])
            matched_new.add(j)
            for p, frame in over:  # the higher-scoring detection takes every attribute of the frame
                old = track.scores[frame]
                if old is None or float(dets["scores"][p, j]) > old:
                    self._write(track, dets, j, p, frame)
            for p, frame in pos[overlap:]:
                self._write(track, dets, j, p, frame)
        if self.per_class:
            for i in alive:
                if i not in matched_old:
                    self.tracks[i].alive = False
            for j in self._births(dets, matched_old, matched_new):
                self.tracks.append(self._new_track(dets, j, clip, 0))

    def _births(self, dets: dict, matched_old: set[int], matched_new: set[int]) -> list[int]:
        """Per-class: the unmatched candidates, in the order the official tracker appends their tracks.

        The official per-class loop (src/models/tracker.py: Tracker.__call__) visits the classes in the
        iteration order of a Python ``set`` of the old and new class ids, and within a matched class the
        births in that of ``set(candidates) - set(matched)``; the same sets are built here so that the
        track order (that of results.json) is the official one. Updates ``_by_class`` as it does.
        """
        new_by_class: dict[int, list[int]] = {}
        for j in range(dets["k"]):
            new_by_class.setdefault(int(dets["labels"][0, j]), []).append(j)
        order: list[int] = []
        for cls in set(list(self._by_class) + list(new_by_class)):
            old, new = self._by_class.get(cls, []), new_by_class.get(cls, [])
            if not new:
                self._by_class.pop(cls, None)
                continue
            if old:
                self._by_class[cls] = [i for i in old if i in matched_old]
                new = list(set(new) - {j for j in new if j in matched_new})
            for j in new:
                self._by_class.setdefault(cls, []).append(len(self.tracks) + len(order))
                order.append(j)
        return order

    def _cost_matrix(self, tracks: list[_VideoTrack], dets: dict, over: list[tuple[int, int]]) -> np.ndarray:
        """``[len(tracks), k]`` stitching costs over the overlap positions ``over`` (all pairs at once)."""
        k = dets["k"]
        cost = np.zeros((len(tracks), k))
        if tracks and over:
            w_mask, w_class, w_score, w_center = self.weights
            ps = [p for p, _ in over]
            frames = [f for _, f in over]
            blank = torch.zeros(self.height, self.width)
            # [N, O, H, W] and [k, O, H, W]: a frame the track has no mask on counts as an empty mask
            mine = torch.stack(
                [torch.stack([tr.soft.get(f, blank).float() for f in frames]) for tr in tracks]
            )
            theirs = dets["masks"][:, ps][dets["mask_index"]].float()  # overlap frames first: less to copy
            cost -= w_mask * _pairwise_iou(mine, theirs, self.binary_iou, self.frame_avg)
            s_new = dets["scores"][ps].numpy()  # [O, k]
            l_new = dets["labels"][ps].numpy()
            c_new = dets["centers"][ps].numpy()  # [O, k, 2]
            for a, tr in enumerate(tracks):
                s_old = np.array([tr.scores[f] if tr.scores[f] is not None else 0.0 for f in frames])
                l_old = np.array([tr.labels[f] if tr.scores[f] is not None else -1 for f in frames])
                same = (l_old[:, None] == l_new).mean(0)
                sdiff = np.abs(s_old[:, None] - s_new).mean(0)
                cdist = np.ones((len(frames), k))
                for o, f in enumerate(frames):
                    if tr.centers[f] is not None:
                        cdist[o] = np.abs(np.asarray(tr.centers[f])[None] - c_new[o]).mean(-1)
                cost[a] += -w_class * same + w_score * sdiff + w_center * cdist.mean(0)
        if self.per_class:
            clip_labels = dets["labels"].mode(0).values.numpy()  # [k]
            for a, tr in enumerate(tracks):
                cost[a, clip_labels != tr.last_label] = _FORBIDDEN
        return cost

    @property
    def final_frames(self) -> int:
        """Frames ``0 .. final_frames - 1`` are final: no later clip covers them (all n after the last)."""
        return self._keep_from()

    def _encode_outside(self, keep_from: int) -> None:
        """RLE-encode (threshold 0.5) every soft mask of a frame no later clip covers."""
        for i, track in enumerate(self.tracks):
            for frame in [f for f in track.soft if f < keep_from]:
                binary = (track.soft.pop(frame) > 0.5).cpu()
                track.masks[frame] = encode_rle(binary.numpy())
                if self.keep_released:
                    self._released.setdefault(frame, {})[i] = binary

    def pop_frame(self, frame: int) -> list[tuple[int, torch.Tensor, float, int]]:
        """The detections of a final frame (``frame < final_frames``), as ``(track index, mask bool [H, W],
        frame score, frame label)`` in track order; only those the final filter keeps per frame (score at
        least ``min_frame_score``, non-empty mask). Needs ``keep_released``; each frame is popped once.

        The track index is the ``track_id`` :meth:`finish` gives. A track listed here may still be dropped
        by ``min_detections`` / ``min_track_score`` at the end, and its final score and category are
        whole-video policies: only :meth:`finish` knows them.
        """
        if not self.keep_released:
            raise ValueError("ClipTracker.pop_frame needs keep_released=True")
        if frame >= self.final_frames:
            raise ValueError(f"ClipTracker: frame {frame} is not final yet (final: < {self.final_frames})")
        masks = self._released.pop(frame, {})
        out = []
        for i in sorted(masks):
            tr = self.tracks[i]
            score = tr.scores[frame]
            if score is None or score < self.min_frame_score or not bool(masks[i].any()):
                continue
            out.append((i, masks[i], float(score), int(tr.labels[frame])))
        return out

    def num_soft_masks(self) -> int:
        """Soft masks held now, over all tracks (the bounded-memory check)."""
        return sum(len(t.soft) for t in self.tracks)

    # ------------------------------------------------------------------ final
    def finish(self) -> list[Track]:
        """The video's tracks after the final filters, in track order."""
        if self.index != len(self.clips):
            raise ValueError(f"ClipTracker: {self.index} of {len(self.clips)} clips given")
        self._encode_outside(self.n)
        out = []
        for i, tr in enumerate(self.tracks):
            valid = [
                f
                for f in range(self.n)
                if tr.scores[f] is not None
                and tr.masks[f] is not None
                and tr.scores[f] >= self.min_frame_score
            ]
            if len(valid) < self.min_detections or not valid:
                continue
            vs = [tr.scores[f] for f in valid]
            score = float(np.mean(vs) if self.score_policy == "mean" else np.median(vs))
            if score <= self.min_track_score:
                continue
            keep = set(valid)
            out.append(
                Track(
                    score=score,
                    label=self._category(tr, valid),
                    masks=[tr.masks[f] if f in keep else None for f in range(self.n)],
                    frame_scores=[tr.scores[f] if f in keep else None for f in range(self.n)],
                    track_id=i,
                    boxes=[_xywh(tr.boxes[f]) if f in keep else None for f in range(self.n)],
                )
            )
        return out

    def _category(self, tr: _VideoTrack, valid: Sequence[int]) -> int:
        if self.class_policy == "most_common":
            # a tie goes to the smallest class id, as np.argmax(np.bincount(...)) in the official
            # src/models/tracker.py: Track.compute_final_category
            counts = Counter(tr.labels[f] for f in valid)
            return min(counts, key=lambda c: (-counts[c], c))
        votes: dict[int, float] = {}
        for f in valid:
            votes[tr.labels[f]] = votes.get(tr.labels[f], 0.0) + tr.scores[f]
        return max(votes, key=votes.get)


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor, binary: bool, frame_average: bool) -> np.ndarray:
    """:func:`mask_iou` of every pair of ``a [N, O, H, W]`` and ``b [k, O, H, W]`` -> ``[N, k]``."""
    if binary:
        a, b = (a > 0.5).float(), (b > 0.5).float()
    n, o = a.shape[:2]
    k = b.shape[0]
    fa, fb = a.reshape(n, o, -1).transpose(0, 1), b.reshape(k, o, -1).transpose(0, 1)  # [O, N, P], [O, k, P]
    inter = torch.bmm(fa, fb.transpose(1, 2))  # [O, N, k]
    union = fa.sum(-1)[:, :, None] + fb.sum(-1)[:, None, :] - inter
    if frame_average:
        iou = (inter / union.clamp(min=1e-6)).mean(0)
    else:
        iou = inter.sum(0) / union.sum(0).clamp(min=1e-6)
    return iou.double().numpy()


def _xywh(box: list[float] | None) -> list[float] | None:
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def _detections(res: dict[str, Any]) -> dict[str, Any]:
    """Normalise a clip result to CPU tensors with per-frame labels ``[T, k]``."""
    scores = torch.as_tensor(res["frame_scores"]).float().cpu()
    t, k = scores.shape
    if "frame_labels" in res:
        labels = torch.as_tensor(res["frame_labels"]).long().cpu()
    else:
        labels = torch.as_tensor(res["labels"]).long().cpu().view(1, k).expand(t, k)
    return {
        "k": k,
        "scores": scores,
        "labels": labels,
        "boxes": torch.as_tensor(res["boxes"]).float().cpu(),
        "centers": torch.as_tensor(res["centers"]).float().cpu(),
        "masks": torch.as_tensor(res["masks"]).cpu(),
        "mask_index": torch.as_tensor(res["mask_index"]).long() if "mask_index" in res else torch.arange(k),
    }
