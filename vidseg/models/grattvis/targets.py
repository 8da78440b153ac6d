"""GRAtt-VIS training targets: the T frames of each video split into clips of W frames (spec §4.3).

The head runs once per clip (one *step*; W = ``LEN_CLIP_WINDOW`` = 1, so 5 steps for 5 frames), and the label
assignment of step c needs, per video, which instances are visible in the clip (``valid``) and which are seen
there for the first time (``new``). The similarity loss also needs per-frame targets for the per-frame
Mask2Former matching of the detector's outputs.

An instance is visible in a frame when its ``valid`` flag is set and its mask has a pixel there (the official
code drops a frame whose mask is empty); instances visible in none of the T frames are dropped, and so are
crowd instances (as :func:`vidseg.structures.clip_batch.frame_targets` drops them from the frame targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vidseg.structures.clip_batch import ClipTargets, frame_targets

__all__ = ["StepTargets", "SequenceTargets", "visible_instances", "split_sequence_targets"]


@dataclass
class StepTargets:
    """The targets of one video in one clip (step) of W frames.

    Attributes:
        labels: ``[N]`` int64 class labels (every instance of the video kept over its T frames).
        ids: ``[N]`` int64 track ids (dataset ``id``).
        masks: ``[N, W, H, W_pad]`` bool, empty where the instance is not visible.
        valid: ``[N]`` bool: the instance has a mask pixel in this clip.
        new: ``[N]`` bool: ``valid`` and not visible in any earlier clip of the sequence.
        seen: ``[N]`` bool: visible in this clip or an earlier one (the official ``prop_inst``; kept for
            inspection, nothing reads it).
    """

    labels: torch.Tensor
    ids: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor
    new: torch.Tensor
    seen: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class SequenceTargets:
    """Everything the GRAtt-VIS criterion reads for one batch of B videos of T frames.

    Attributes:
        steps: ``steps[c][b]``: :class:`StepTargets` of video b in clip c, ``c = 0 .. T/W - 1``.
        frames: ``B*T`` per-frame dicts, video-major (index ``b*T + t``), for the per-frame matching:
            ``{"labels" [G] int64, "masks" [G, H, W] bool, "boxes" [G, 4], "inst" [G] int64}``, where ``inst``
            is each frame target's row in the video's kept instances (its identity for the similarity loss).
        window: W.
    """

    steps: list[list[StepTargets]]
    frames: list[dict[str, torch.Tensor]]
    window: int

    @property
    def num_steps(self) -> int:
        return len(self.steps)


def visible_instances(t: ClipTargets) -> ClipTargets:
    """The instances to train on, with ``valid`` set to "visible" (valid flag and a mask pixel).

    Masks are zeroed where not visible; crowd instances and instances visible in no frame are dropped.
    """
    if t.masks.dim() != 4:
        raise ValueError(f"ClipTargets.masks must be [N, T, H, W], got {tuple(t.masks.shape)}")
    masks = t.masks.bool()
    visible = t.valid.bool() & masks.flatten(2).any(-1)
    keep = visible.any(1)
    if t.iscrowd is not None:
        keep &= ~t.iscrowd.bool().to(keep.device)
    visible = visible[keep]
    return ClipTargets(
        labels=t.labels[keep].long(),
        ids=t.ids[keep].long(),
        masks=masks[keep] & visible[..., None, None],
        boxes=t.boxes[keep],
        valid=visible,
        iscrowd=None,
    )


def split_sequence_targets(targets: Sequence[ClipTargets], window: int) -> SequenceTargets:
    """Per-clip and per-frame targets of a batch (spec §4.3, the official ``split_video_targets``).

    Args:
        targets: B :class:`ClipTargets` of T frames each (masks ``[N, T, H, W]`` bool at the padded size,
            labels / ids ``[N]``, valid ``[N, T]``).
        window: frames per clip W; T must be a multiple of W.
    Returns:
        :class:`SequenceTargets` with ``T // W`` steps.
    """
    if window < 1:
        raise ValueError(
            f"split_sequence_targets: window (MODEL.GENVIS.LEN_CLIP_WINDOW) {window} must be >= 1"
        )
    if not targets:
        raise ValueError(
            "split_sequence_targets: no targets (a training batch needs one ClipTargets per video)"
        )
    num_frames = {int(t.masks.shape[1]) for t in targets}
    if len(num_frames) != 1:
        raise ValueError(
            f"split_sequence_targets: the videos have different frame counts {sorted(num_frames)}"
        )
    frames_per_video = num_frames.pop()
    if frames_per_video % window:
        raise ValueError(
            f"split_sequence_targets: {frames_per_video} frames per video is not a multiple of the clip "
            f"window {window} (MODEL.GENVIS.LEN_CLIP_WINDOW)"
        )
    kept = [visible_instances(t) for t in targets]
    num_steps = frames_per_video // window
    steps: list[list[StepTargets]] = [[] for _ in range(num_steps)]
    for t in kept:
        seen = torch.zeros_like(t.labels, dtype=torch.bool)
        for c in range(num_steps):
            masks = t.masks[:, c * window : (c + 1) * window]
            valid = masks.flatten(1).any(1)
            new = valid & ~seen
            seen = seen | valid
            steps[c].append(StepTargets(t.labels, t.ids, masks, valid, new, seen))
    frames: list[dict[str, torch.Tensor]] = []
    for t in kept:
        for f in range(frames_per_video):
            ft = frame_targets(t, f)
            ft["inst"] = t.valid[:, f].nonzero().flatten()
            frames.append(ft)
    return SequenceTargets(steps=steps, frames=frames, window=window)
