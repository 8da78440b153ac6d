"""``build(cfg)`` of ToyVIS: maps ``MODEL.TOY.*`` to constructor kwargs and is registered as ``ToyVIS``."""

from __future__ import annotations

from typing import Any

from vidseg.models.registry import ModelBundle, register_method
from vidseg.models.toy.criterion import ToyCriterion, ToyMatcher
from vidseg.models.toy.inference import ToyInference
from vidseg.models.toy.model import ToyVISModel

__all__ = ["build", "num_classes_from_cfg"]


def num_classes_from_cfg(cfg: Any) -> int:
    """``MODEL.TOY.NUM_CLASSES``, or when 0 the class count of ``DATASETS.TRAIN[0]`` (dataset metadata)."""
    if cfg.MODEL.TOY.NUM_CLASSES > 0:
        return int(cfg.MODEL.TOY.NUM_CLASSES)
    if cfg.MODEL.CLASS_NAMES:  # a run's config.yaml: no annotation file needed
        return len(cfg.MODEL.CLASS_NAMES)
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        raise ValueError("MODEL.TOY.NUM_CLASSES is 0 and DATASETS.TRAIN is empty: set one of them")
    try:
        from vidseg.data.catalog import get_dataset_metadata
    except ImportError as e:
        raise ValueError(
            f"MODEL.TOY.NUM_CLASSES is 0 and dataset metadata is unavailable ({e}); set it"
        ) from None
    meta = get_dataset_metadata(names[0], cfg)
    k = int(getattr(meta, "num_classes", 0) or 0)
    if k <= 0:
        raise ValueError(
            f"MODEL.TOY.NUM_CLASSES is 0 and the metadata of {names[0]!r} has no classes; set it"
        )
    return k


@register_method("ToyVIS")
def build(cfg: Any) -> ModelBundle:
    c = cfg.MODEL.TOY
    k = num_classes_from_cfg(cfg)
    model = ToyVISModel(k, num_queries=c.NUM_QUERIES, hidden_dim=c.HIDDEN_DIM, dec_layers=c.DEC_LAYERS)
    weights = {"loss_ce": c.CLASS_WEIGHT, "loss_mask": c.MASK_WEIGHT, "loss_dice": c.DICE_WEIGHT}
    matcher = ToyMatcher(c.CLASS_WEIGHT, c.MASK_WEIGHT, c.DICE_WEIGHT)
    criterion = ToyCriterion(k, matcher, weights, eos_coef=c.EOS_COEF, num_aux=c.DEC_LAYERS - 1)
    return ModelBundle(model, criterion, ToyInference(c.TOPK, c.MASK_THRESHOLD), param_groups=None)
