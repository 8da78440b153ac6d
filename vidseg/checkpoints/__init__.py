"""Checkpoints: safe loading, format detection, official name maps, DeVIS stage 2, ImageNet weights."""

from vidseg.checkpoints.detectron2 import detectron2_to_vidseg, vidseg_to_detectron2
from vidseg.checkpoints.devis_adapt import COCO_TO_YTVIS19_CLASS_MAP, adapt_coco_to_devis
from vidseg.checkpoints.formats import (
    FORMATS,
    IMAGENET_FORMATS,
    deformable_detr_to_devis,
    detect_format,
    extract_state_dict,
    needs_class_shift,
    shift_class_neuron,
)
from vidseg.checkpoints.imagenet import (
    detectron2_resnet_to_torchvision,
    load_imagenet_backbone,
    resize_relative_position_bias,
    torchvision_resnet_to_detectron2,
)
from vidseg.checkpoints.report import LoadReport
from vidseg.checkpoints.safe_load import (
    CheckpointError,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    safe_read,
)
from vidseg.checkpoints.weights import (
    ConvertedCheckpoint,
    convert_checkpoint,
    load_weights,
    read_weights,
    write_weights,
)

__all__ = [
    "COCO_TO_YTVIS19_CLASS_MAP",
    "FORMATS",
    "IMAGENET_FORMATS",
    "ConvertedCheckpoint",
    "CheckpointError",
    "LoadReport",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "adapt_coco_to_devis",
    "convert_checkpoint",
    "deformable_detr_to_devis",
    "detectron2_to_vidseg",
    "detectron2_resnet_to_torchvision",
    "detect_format",
    "extract_state_dict",
    "safe_read",
    "load_imagenet_backbone",
    "load_weights",
    "needs_class_shift",
    "read_weights",
    "resize_relative_position_bias",
    "write_weights",
    "shift_class_neuron",
    "torchvision_resnet_to_detectron2",
    "vidseg_to_detectron2",
]
