"""Checkpoints: safe loading, format detection, official name maps, DeVIS stage 2, ImageNet weights."""

from vidseg.checkpoints.devis_adapt import COCO_TO_YTVIS19_CLASS_MAP, adapt_coco_to_devis
from vidseg.checkpoints.formats import (
    FORMATS,
    deformable_detr_to_devis,
    detect_format,
    extract_state_dict,
    shift_class_neuron,
)
from vidseg.checkpoints.imagenet import load_imagenet_backbone, resize_relative_position_bias
from vidseg.checkpoints.loader import load_weights, read_checkpoint, save_checkpoint
from vidseg.checkpoints.report import LoadReport
from vidseg.checkpoints.safe_load import (
    CheckpointError,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    load_checkpoint_file,
)

__all__ = [
    "COCO_TO_YTVIS19_CLASS_MAP",
    "FORMATS",
    "CheckpointError",
    "LoadReport",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "adapt_coco_to_devis",
    "deformable_detr_to_devis",
    "detect_format",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_imagenet_backbone",
    "load_weights",
    "read_checkpoint",
    "resize_relative_position_bias",
    "save_checkpoint",
    "shift_class_neuron",
]
