"""Config -> datasets: the builders the engine calls (the only data module that reads the config)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from vidseg.data.catalog import get_dataset_metadata, get_dataset_spec, load_dataset
from vidseg.data.clip_dataset import ClipTrainDataset
from vidseg.data.collate import collate_clips
from vidseg.data.errors import DatasetError
from vidseg.data.records import DatasetMetadata
from vidseg.data.transforms import ClipAugmentation
from vidseg.data.video_dataset import VideoDataset

__all__ = [
    "build_augmentation",
    "build_train_dataset",
    "build_test_dataset",
    "build_collate_fn",
    "get_dataset_metadata",
    "ConcatClipDataset",
]


class ConcatClipDataset(ConcatDataset):
    """Several training datasets in one label space; ``set_epoch`` reaches every part."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)


def build_augmentation(cfg: Any) -> ClipAugmentation:
    """``INPUT.*`` -> :class:`ClipAugmentation` (sizes scaled by ``INPUT.SCALE_FACTOR_TRAIN``, as DeVIS)."""
    inp = cfg.INPUT
    s = float(inp.SCALE_FACTOR_TRAIN)

    def scale(v: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s * x) for x in v)

    if inp.RANDOM_FLIP not in ("none", "horizontal"):
        raise DatasetError(f"INPUT.RANDOM_FLIP must be 'none' or 'horizontal', got {inp.RANDOM_FLIP!r}")
    return ClipAugmentation(
        min_sizes=scale(inp.MIN_SIZE_TRAIN),
        max_size=int(s * inp.MAX_SIZE_TRAIN) if inp.MAX_SIZE_TRAIN else None,
        flip=inp.RANDOM_FLIP == "horizontal",
        crop=bool(inp.CROP.ENABLED),
        crop_resize_sizes=scale(inp.CROP.RESIZE_SIZES),
        crop_size=scale(inp.CROP.SIZE),
        moving_crop=bool(inp.CROP.MOVING),
        photometric=bool(inp.PHOTOMETRIC),
    )


def _check_label_spaces(names: Sequence[str], metas: Sequence[DatasetMetadata]) -> None:
    first = metas[0]
    for name, m in zip(names[1:], metas[1:]):
        if m.category_ids != first.category_ids:
            raise DatasetError(
                f"DATASETS.TRAIN: {name!r} has category ids {m.category_ids} but {names[0]!r} has "
                f"{first.category_ids}; joint training needs one label space (use e.g. coco2ytvis2019_train)"
            )


def build_train_dataset(cfg: Any) -> Dataset:
    """The map-style training dataset of ``DATASETS.TRAIN`` (has ``set_epoch``; items as
    :class:`ClipTrainDataset`). Several names are concatenated and must share one label space."""
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise DatasetError("DATASETS.TRAIN is empty: name at least one dataset (see docs/datasets.md)")
    parts, metas = [], []
    aug = build_augmentation(cfg)
    for name in names:
        records, meta = load_dataset(name, cfg)
        if not meta.has_annotations:
            raise DatasetError(f"DATASETS.TRAIN: {name!r} ({meta.json_file}) has no annotations")
        if cfg.DATASETS.TRAIN_SUBSET > 0:
            records = records[: cfg.DATASETS.TRAIN_SUBSET]
        parts.append(
            ClipTrainDataset(
                records,
                num_frames=cfg.INPUT.NUM_FRAMES,
                sampler=cfg.INPUT.SAMPLER,
                frame_range=cfg.INPUT.SAMPLING_FRAME_RANGE,
                shuffle_frames=cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
                augmentation=aug,
                pixel_mean=cfg.MODEL.PIXEL_MEAN,
                pixel_std=cfg.MODEL.PIXEL_STD,
                input_format=cfg.INPUT.FORMAT,
                seed=cfg.SEED,
                min_area=cfg.INPUT.MIN_VALID_AREA,
                # COCO has many images without a mapped class; a clip without targets teaches nothing there.
                filter_empty=get_dataset_spec(name, cfg).kind == "coco",
            )
        )
        metas.append(meta)
    _check_label_spaces(names, metas)
    return parts[0] if len(parts) == 1 else ConcatClipDataset(parts)


def build_test_dataset(cfg: Any, name: str) -> VideoDataset:
    """Whole videos of ``name`` for inference, resized per ``INPUT.MIN/MAX_SIZE_TEST`` and normalised."""
    records, meta = load_dataset(name, cfg)
    return VideoDataset(
        records,
        meta,
        min_size=cfg.INPUT.MIN_SIZE_TEST,
        max_size=cfg.INPUT.MAX_SIZE_TEST or None,
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        input_format=cfg.INPUT.FORMAT_TEST or cfg.INPUT.FORMAT,
    )


def build_collate_fn(cfg: Any) -> Callable:
    """``collate_clips`` with ``INPUT.SIZE_DIVISIBILITY``, for the training DataLoader."""
    return functools.partial(collate_clips, size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY)
