"""Data pipeline: catalog and readers (YouTube-VIS / OVIS / COCO), clip samplers, clip-consistent
augmentation, batching, inference datasets, video I/O and the synthetic dataset generator.

See docs/datasets.md.
"""

from vidseg.data.build import (
    build_augmentation,
    build_collate_fn,
    build_test_dataset,
    build_train_dataset,
)
from vidseg.data.catalog import (
    dataset_root,
    get_dataset_metadata,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from vidseg.data.clip_dataset import ClipTrainDataset
from vidseg.data.collate import collate_clips, pad_frames
from vidseg.data.errors import DatasetError
from vidseg.data.frame_sampling import InferenceClip, overlapping_clips, pingpong_indices
from vidseg.data.records import DatasetMetadata, InstanceRecord, VideoRecord
from vidseg.data.synthetic import generate_synthetic_dataset
from vidseg.data.video_dataset import VideoDataset, VideoItem, video_item_from_source

__all__ = [
    "ClipTrainDataset",
    "DatasetError",
    "DatasetMetadata",
    "InferenceClip",
    "InstanceRecord",
    "VideoDataset",
    "VideoItem",
    "VideoRecord",
    "build_augmentation",
    "build_collate_fn",
    "build_test_dataset",
    "build_train_dataset",
    "collate_clips",
    "dataset_root",
    "generate_synthetic_dataset",
    "get_dataset_metadata",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "overlapping_clips",
    "pad_frames",
    "pingpong_indices",
    "register_dataset",
    "unregister_dataset",
    "video_item_from_source",
]
