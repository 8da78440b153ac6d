"""Config -> datasets: the builders the engine calls (the only data module that reads the config)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from vidseg.data.catalog import get_dataset_metadata, get_dataset_spec, load_dataset
from vidseg.data.clip_dataset import ClipTrainDataset
from vidseg.data.collate import collate_clips
from vidseg.data.dataset_ratio import RatioMixedDataset, check_dataset_ratio
from vidseg.data.errors import DatasetError
from vidseg.data.large_scale_jitter import LargeScaleJitter
from vidseg.data.pseudo_video import PseudoVideoAugmentation, RotationPseudoVideo
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

logger = logging.getLogger(__name__)


class ConcatClipDataset(ConcatDataset):
    """Several training datasets in one label space; ``set_epoch`` reaches every part."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)


def _devis_key(cfg: Any, group: str, key: str, default: Any) -> Any:
    """``<group>.DEVIS.<key>`` where the DeVIS keys are in the config (they are added by the DeVIS method)."""
    node = getattr(cfg, group)
    return node.DEVIS.get(key, default) if "DEVIS" in node else default


# INPUT.RANDOM_FLIP values that flip (p=0.5, one draw per clip): VITA's configs say "flip_by_clip", which is
# what vidseg's "horizontal" already does.
FLIP_VALUES = ("horizontal", "flip_by_clip")

# INPUT.DATASET_MAPPER_NAME values (Mask2Former's names): the LSJ mapper, and those meaning the clip pipeline.
LSJ_MAPPER = "coco_instance_lsj"
CLIP_PIPELINE_MAPPERS = ("", "mask_former_instance")


def _large_scale_jitter(cfg: Any) -> LargeScaleJitter | None:
    """VITA's ``INPUT.LSJ_AUG.ENABLED`` (its sizes), else Mask2Former's ``INPUT.DATASET_MAPPER_NAME
    "coco_instance_lsj"`` (``INPUT.IMAGE_SIZE / MIN_SCALE / MAX_SCALE``); None when neither is set. The keys
    exist where the method adds them (Mask2Former and the methods built on it)."""
    inp = cfg.INPUT
    if "LSJ_AUG" in inp and inp.LSJ_AUG.ENABLED:
        node = inp.LSJ_AUG
    else:
        name = str(inp.get("DATASET_MAPPER_NAME", ""))
        if name not in (LSJ_MAPPER, *CLIP_PIPELINE_MAPPERS):
            raise DatasetError(
                f"INPUT.DATASET_MAPPER_NAME must be {LSJ_MAPPER!r} (large-scale jitter) or one of "
                f"{CLIP_PIPELINE_MAPPERS} (the multi-scale clip pipeline), got {name!r}"
            )
        if name != LSJ_MAPPER:
            return None
        node = inp
    try:
        return LargeScaleJitter(
            image_size=int(node.IMAGE_SIZE),
            min_scale=float(node.MIN_SCALE),
            max_scale=float(node.MAX_SCALE),
            flip=inp.RANDOM_FLIP in FLIP_VALUES,
        )
    except ValueError as e:
        raise DatasetError(f"INPUT{'.LSJ_AUG' if node is not inp else ''}: {e}") from None


def build_augmentation(cfg: Any) -> ClipAugmentation | LargeScaleJitter:
    """``INPUT.*`` -> :class:`ClipAugmentation` (sizes scaled by ``INPUT.SCALE_FACTOR_TRAIN``, as DeVIS), or
    :class:`LargeScaleJitter` (fixed-size output) when the LSJ keys select it (``_large_scale_jitter``);
    LSJ uses only the flip of the other ``INPUT`` augmentation keys, as the official mappers.

    ``INPUT.DEVIS.MULTI_SCALE_TRAIN False`` gives VisTR's chain with its fixed sizes (``MIN_SIZE_TRAIN`` and
    ``MAX_SIZE_TRAIN`` unused)."""
    inp = cfg.INPUT
    s = float(inp.SCALE_FACTOR_TRAIN)

    def scale(v: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s * x) for x in v)

    if inp.RANDOM_FLIP not in ("none", *FLIP_VALUES):
        raise DatasetError(
            f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'flip_by_clip', got {inp.RANDOM_FLIP!r}"
        )
    lsj = _large_scale_jitter(cfg)
    if lsj is not None:
        return lsj
    if not _devis_key(cfg, "INPUT", "MULTI_SCALE_TRAIN", True):
        # DeVIS ablations: VisTR's fixed sizes (devis.md §3.2); the crop keeps INPUT.CROP.*.
        return ClipAugmentation(
            min_sizes=scale(range(480, 769, 32)),
            max_size=int(s * 800),
            flip=inp.RANDOM_FLIP in FLIP_VALUES,
            crop_resize_sizes=scale(inp.CROP.RESIZE_SIZES),
            crop_size=scale(inp.CROP.SIZE),
            photometric=bool(inp.PHOTOMETRIC),
            vistr=True,
            out_size=int(s * 300),
            out_max_size=int(s * 540),
        )
    return ClipAugmentation(
        min_sizes=scale(inp.MIN_SIZE_TRAIN),
        max_size=int(s * inp.MAX_SIZE_TRAIN) if inp.MAX_SIZE_TRAIN else None,
        flip=inp.RANDOM_FLIP in FLIP_VALUES,
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


# DeVIS COCO joint training keeps COCO images with at most this many annotations (devis.md §3.8).
MAX_PSEUDO_VIDEO_INSTANCES = 25
# INPUT.PSEUDO.AUGMENTATIONS entries implemented (VITA also knows brightness / contrast / saturation, which
# no official config uses).
PSEUDO_AUGMENTATIONS = ("rotation",)


def _vita_pseudo_video(cfg: Any, aug: Any) -> tuple[RotationPseudoVideo | None, Any]:
    """VITA's COCO pseudo-videos (``INPUT.PSEUDO.*``, added by the GRAtt-VIS keys): the clip pipeline with the
    ``PSEUDO`` sizes and crop and no photometric distortion, then a rotation per frame when
    ``PSEUDO.AUGMENTATIONS`` has "rotation". Large-scale jitter is kept as it is (VITA's LSJ recipe)."""
    p = cfg.INPUT.PSEUDO
    unknown = [a for a in p.AUGMENTATIONS if a not in PSEUDO_AUGMENTATIONS]
    if unknown:
        logger.warning(
            "INPUT.PSEUDO.AUGMENTATIONS %s: not implemented, ignored (implemented: %s)",
            unknown,
            list(PSEUDO_AUGMENTATIONS),
        )
    if isinstance(aug, ClipAugmentation):
        aug = dataclasses.replace(
            aug,
            min_sizes=tuple(int(x) for x in p.MIN_SIZE_TRAIN),
            max_size=int(p.MAX_SIZE_TRAIN) or None,
            crop=bool(p.CROP.ENABLED),
            crop_size=tuple(int(x) for x in p.CROP.SIZE),
            photometric=False,
        )
    return (RotationPseudoVideo() if "rotation" in p.AUGMENTATIONS else None), aug


def build_train_dataset(cfg: Any) -> Dataset:
    """The map-style training dataset of ``DATASETS.TRAIN`` (has ``set_epoch``; items as
    :class:`ClipTrainDataset`). Several names are concatenated and must share one label space.

    With ``DATASETS.DEVIS.COCO_JOINT_TRAINING`` the COCO sets (``coco2ytvis2019_train`` ...) become moving
    pseudo-videos (:class:`PseudoVideoAugmentation`): images with at most 25 annotations, no photometric
    distortion. ``INPUT.DEVIS.SAMPLE_EACH_FRAME`` lets every frame start a clip.

    With the VITA / GRAtt-VIS keys (``INPUT.PSEUDO``), COCO sets become VITA's pseudo-videos
    (:func:`_vita_pseudo_video`), and ``DATASETS.DATASET_RATIO`` (one weight per name) mixes the sets by
    ratio (:class:`RatioMixedDataset`) instead of concatenating them."""
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise DatasetError("DATASETS.TRAIN is empty: name at least one dataset (see docs/datasets.md)")
    ratio = list(cfg.DATASETS.get("DATASET_RATIO", None) or [])
    if ratio:
        ratio = check_dataset_ratio(ratio, names)
    parts, metas = [], []
    aug = build_augmentation(cfg)
    joint = bool(_devis_key(cfg, "DATASETS", "COCO_JOINT_TRAINING", False))
    each_frame = bool(_devis_key(cfg, "INPUT", "SAMPLE_EACH_FRAME", False))
    for name in names:
        records, meta = load_dataset(name, cfg)
        if not meta.has_annotations:
            raise DatasetError(f"DATASETS.TRAIN: {name!r} ({meta.json_file}) has no annotations")
        is_coco = get_dataset_spec(name, cfg).kind == "coco"
        pseudo = PseudoVideoAugmentation() if joint and is_coco else None
        part_aug = (
            dataclasses.replace(aug, photometric=False)
            if pseudo is not None and isinstance(aug, ClipAugmentation)
            else aug
        )
        if pseudo is not None:
            records = [r for r in records if len(r.instances) <= MAX_PSEUDO_VIDEO_INSTANCES]
        elif is_coco and "PSEUDO" in cfg.INPUT:
            pseudo, part_aug = _vita_pseudo_video(cfg, aug)
        if cfg.DATASETS.TRAIN_SUBSET > 0:
            records = records[: cfg.DATASETS.TRAIN_SUBSET]
        parts.append(
            ClipTrainDataset(
                records,
                num_frames=cfg.INPUT.NUM_FRAMES,
                sampler=cfg.INPUT.SAMPLER,
                frame_range=cfg.INPUT.SAMPLING_FRAME_RANGE,
                shuffle_frames=cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
                # DeVIS drops the photometric distortion for the pseudo-videos (they have their own shifts).
                augmentation=part_aug,
                pixel_mean=cfg.MODEL.PIXEL_MEAN,
                pixel_std=cfg.MODEL.PIXEL_STD,
                input_format=cfg.INPUT.FORMAT,
                seed=cfg.SEED,
                min_area=cfg.INPUT.MIN_VALID_AREA,
                # COCO has many images without a mapped class; a clip without targets teaches nothing there.
                filter_empty=is_coco,
                sample_each_frame=each_frame,
                pseudo_video=pseudo,
            )
        )
        metas.append(meta)
    _check_label_spaces(names, metas)
    if len(parts) == 1:
        return parts[0]
    if not ratio:
        return ConcatClipDataset(parts)
    mixed = RatioMixedDataset(parts, ratio, seed=cfg.SEED)
    logger.info(
        "DATASETS.DATASET_RATIO %s: %s of the %d clips of an epoch",
        ratio,
        ", ".join(f"{n} {p:.0%} ({len(d)} items)" for n, p, d in zip(names, mixed.probs, parts)),
        len(mixed),
    )
    return mixed


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
