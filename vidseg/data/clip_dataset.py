"""The training dataset: video records -> sampled, augmented clips with per-clip targets.

``dataset[i]`` depends only on ``(seed, epoch, i)``: all randomness is drawn from
``np.random.default_rng([seed, epoch, i])`` after :meth:`ClipTrainDataset.set_epoch`, never from global state,
so a resumed run reproduces every clip exactly. With a DataLoader, call ``set_epoch`` before creating the
epoch's iterator and keep ``persistent_workers=False`` (workers copy the dataset when the iterator starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vidseg.data.errors import DatasetError
from vidseg.data.frame_sampling import consecutive_clip, consecutive_items, reference_range_clip
from vidseg.data.large_scale_jitter import LargeScaleJitter
from vidseg.data.pseudo_video import PseudoVideoAugmentation, RotationPseudoVideo
from vidseg.data.records import VideoRecord
from vidseg.data.transforms import ClipAugmentation
from vidseg.data.video_io import load_image
from vidseg.structures.box_ops import box_xyxy_to_cxcywh, masks_to_boxes
from vidseg.structures.clip_batch import ClipTargets
from vidseg.structures.masks import decode_segmentation

__all__ = ["ClipTrainDataset", "normalize_frames", "build_clip_targets"]


def normalize_frames(
    frames: torch.Tensor, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_format: str = "RGB"
) -> torch.Tensor:
    """``[T, 3, H, W]`` RGB 0..255 -> normalised; ``input_format="BGR"`` flips the channels first and then
    normalises with the given (RGB) statistics: DeVIS training (cv2 BGR frames + ImageNet RGB stats)."""
    if input_format.upper() == "BGR":
        frames = frames.flip(1)
    mean = torch.as_tensor(pixel_mean, dtype=frames.dtype).view(1, 3, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames - mean) / std


def build_clip_targets(
    masks: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, iscrowd: torch.Tensor, min_area: int = 2
) -> ClipTargets:
    """Targets of an augmented clip (unpadded size).

    Args:
        masks: ``[N, T, H, W]`` bool. A frame whose mask has ``<= min_area`` pixels is invalid (DeVIS) and its
            mask is zeroed; instances with no valid frame are dropped.
        labels, ids, iscrowd: ``[N]``.

    Returns:
        :class:`ClipTargets` with ``boxes`` normalised cxcywh w.r.t. ``(H, W)``, zero on invalid frames.
    """
    n, t, h, w = masks.shape
    valid = masks.flatten(2).sum(-1) > min_area
    masks = masks & valid[..., None, None]
    keep = valid.any(1)
    masks, valid = masks[keep], valid[keep]
    boxes = masks_to_boxes(masks.reshape(-1, h, w)).reshape(-1, t, 4)
    boxes = box_xyxy_to_cxcywh(boxes) / torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = boxes * valid[..., None]
    return ClipTargets(
        labels=labels[keep], ids=ids[keep], masks=masks, boxes=boxes, valid=valid, iscrowd=iscrowd[keep]
    )


class ClipTrainDataset(Dataset):
    """Map-style dataset of training clips.

    Args:
        records: the videos (from a reader; one-frame COCO records become pseudo-videos).
        num_frames: T, frames per clip.
        sampler: ``"consecutive"`` (DeVIS: one item per valid start, epoch length ``sum(len - T + 1)``) or
            ``"reference_range"`` (VITA/GenVIS: one item per video, a random reference frame plus frames
            within ``frame_range``).
        augmentation: the clip augmentation (None: no augmentation). A :class:`LargeScaleJitter` pads every
            clip to a fixed square; the item then says where the padding is (``pad_mask``).
        pixel_mean, pixel_std, input_format: normalisation (see :func:`normalize_frames`).
        seed: base seed. drop_crowd: leave crowd instances out of the targets (DeVIS drops them).
        min_area: a frame mask with at most this many pixels is invalid.
        filter_empty: leave out videos without any (non-crowd) instance.
        sample_each_frame: with ``"consecutive"``, every frame starts an item (DeVIS SAMPLE_EACH_FRAME); clips
            running past the end are padded with reflected frames (``f, ..., n-1, n-2, ...``).
        pseudo_video: turns one-frame records (COCO images) into moving pseudo-videos before ``augmentation``
            (DeVIS COCO joint training), or after it for one with ``after_augmentation`` (VITA's
            :class:`RotationPseudoVideo`; before it with large-scale jitter, as VITA's LSJ recipe); None:
            such clips repeat the image.

    Item ``i`` is a dict:
        ``frames``: ``[T, 3, H, W]`` float normalised; ``targets``: :class:`ClipTargets` (masks
        ``[N, T, H, W]`` at the unpadded size); ``meta``: ``video_id``, ``frame_indices``,
        ``orig_size`` (h, w), ``image_size`` (h, w) of the image (without the padding an augmentation may have
        added), ``file_names``; and, only where the augmentation padded, ``pad_mask``: ``[T, H, W]`` bool,
        True on the padding.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        num_frames: int,
        sampler: str = "consecutive",
        frame_range: int = 20,
        shuffle_frames: bool = False,
        augmentation: ClipAugmentation | LargeScaleJitter | None = None,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        seed: int = 0,
        drop_crowd: bool = True,
        min_area: int = 2,
        filter_empty: bool = False,
        sample_each_frame: bool = False,
        pseudo_video: PseudoVideoAugmentation | RotationPseudoVideo | None = None,
    ) -> None:
        if sampler not in ("consecutive", "reference_range"):
            raise ValueError(f"INPUT.SAMPLER must be 'consecutive' or 'reference_range', got {sampler!r}")
        if filter_empty:
            records = [r for r in records if any(not (drop_crowd and i.iscrowd) for i in r.instances)]
        if not records:
            raise DatasetError("the training set has no videos (after filtering videos without instances)")
        self.records = records
        self.num_frames = num_frames
        self.sampler = sampler
        self.frame_range = frame_range
        self.shuffle_frames = shuffle_frames
        self.augmentation = augmentation
        self.pixel_mean, self.pixel_std, self.input_format = list(pixel_mean), list(pixel_std), input_format
        self.seed = int(seed)
        self.epoch = 0
        self.drop_crowd = drop_crowd
        self.min_area = min_area
        self.pseudo_video = pseudo_video
        if sampler == "consecutive":
            self.items = consecutive_items([r.length for r in records], num_frames, sample_each_frame)
        else:
            self.items = [(v, 0) for v in range(len(records))]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` reproduces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def frame_indices(self, i: int, rng: np.random.Generator) -> list[int]:
        v, start = self.items[i]
        n = self.records[v].length
        if self.sampler == "consecutive":
            return consecutive_clip(n, start, self.num_frames)
        return reference_range_clip(n, self.num_frames, self.frame_range, rng, self.shuffle_frames)

    def _load(self, rec: VideoRecord, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, list]:
        cache: dict[int, np.ndarray] = {}
        for t in idx:
            if t not in cache:
                img = load_image(rec.file_names[t], rec.describe())
                if img.shape[:2] != (rec.height, rec.width):
                    raise DatasetError(
                        f"{rec.source}: video {rec.describe()}: frame {rec.file_names[t]} is "
                        f"{img.shape[1]}x{img.shape[0]} but the JSON says {rec.width}x{rec.height}"
                    )
                cache[t] = img
        frames = torch.from_numpy(np.stack([cache[t] for t in idx])).permute(0, 3, 1, 2).float()
        insts = [x for x in rec.instances if not (self.drop_crowd and x.iscrowd)]
        masks = torch.zeros((len(insts), len(idx), rec.height, rec.width), dtype=torch.bool)
        decoded: dict[tuple[int, int], np.ndarray | None] = {}
        for n, inst in enumerate(insts):
            for k, t in enumerate(idx):
                if (n, t) not in decoded:
                    try:
                        decoded[n, t] = decode_segmentation(inst.segmentations[t], rec.height, rec.width)
                    except ValueError as e:
                        raise DatasetError(
                            f"{rec.source}: video {rec.describe()}: annotation {inst.id}: "
                            f"field 'segmentations'[{t}]: {e}"
                        ) from None
                m = decoded[n, t]
                if m is not None:
                    masks[n, k] = torch.from_numpy(m)
        return frames, masks, insts

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.draw(i, 0)

    def draw(self, i: int, repeat: int = 0) -> dict[str, Any]:
        """Item ``i`` with the random draws of its ``repeat``-th use in the epoch (``self[i]`` is repeat 0):
        a dataset mixed by ``DATASETS.DATASET_RATIO`` may use a small set's items many times per epoch."""
        if not 0 <= i < len(self.items):
            raise IndexError(i)
        key = [self.seed, self.epoch, i] + ([repeat] if repeat else [])
        rng = np.random.default_rng(key)
        rec = self.records[self.items[i][0]]
        idx = self.frame_indices(i, rng)
        frames, masks, insts = self._load(rec, idx)
        pseudo = self.pseudo_video if rec.length == 1 else None
        lsj = isinstance(self.augmentation, LargeScaleJitter)
        after = pseudo is not None and getattr(pseudo, "after_augmentation", False) and not lsj
        if pseudo is not None and not after:
            frames, masks = pseudo(frames, masks, rng)
        valid = None
        if lsj:
            frames, masks, valid = self.augmentation(frames, masks, rng)
        elif self.augmentation is not None:
            frames, masks = self.augmentation(frames, masks, rng)
        if after:
            frames, masks = pseudo(frames, masks, rng)
        targets = build_clip_targets(
            masks,
            torch.tensor([x.label for x in insts], dtype=torch.int64),
            torch.tensor([x.id for x in insts], dtype=torch.int64),
            torch.tensor([x.iscrowd for x in insts], dtype=torch.bool),
            self.min_area,
        )
        item = {
            "frames": normalize_frames(frames, self.pixel_mean, self.pixel_std, self.input_format),
            "targets": targets,
            "meta": {
                "video_id": rec.video_id,
                "frame_indices": idx,
                "orig_size": (rec.height, rec.width),
                "image_size": tuple(valid or frames.shape[-2:]),
                "file_names": [rec.file_names[t] for t in idx],
            },
        }
        if valid is not None:
            pad = torch.ones((frames.shape[0], *frames.shape[-2:]), dtype=torch.bool)
            pad[:, : valid[0], : valid[1]] = False
            item["pad_mask"] = pad
        return item
