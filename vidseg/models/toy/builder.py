"""``build(cfg, metadata)`` of ToyVIS: maps ``MODEL.TOY.*`` to constructor kwargs.

Named ``builder``, not ``build``, so that importing it does not replace the package's ``build`` function.
"""

from __future__ import annotations

from typing import Any

from vidseg.models.bundle import ModelBundle, num_classes_from
from vidseg.models.toy.criterion import ToyCriterion, ToyMatcher
from vidseg.models.toy.inference import ToyInference
from vidseg.models.toy.model import ToyVISModel

__all__ = ["build"]


def build(cfg: Any, metadata: Any = None) -> ModelBundle:
    """Model, criterion and inference from ``MODEL.TOY.*``; K from ``metadata`` when ``NUM_CLASSES`` is 0."""
    c = cfg.MODEL.TOY
    k = num_classes_from(c.NUM_CLASSES, metadata, "MODEL.TOY.NUM_CLASSES")
    model = ToyVISModel(k, num_queries=c.NUM_QUERIES, hidden_dim=c.HIDDEN_DIM, dec_layers=c.DEC_LAYERS)
    weights = {"loss_ce": c.CLASS_WEIGHT, "loss_mask": c.MASK_WEIGHT, "loss_dice": c.DICE_WEIGHT}
    matcher = ToyMatcher(c.CLASS_WEIGHT, c.MASK_WEIGHT, c.DICE_WEIGHT)
    criterion = ToyCriterion(k, matcher, weights, eos_coef=c.EOS_COEF, num_aux=c.DEC_LAYERS - 1)
    return ModelBundle(model, criterion, ToyInference(c.TOPK, c.MASK_THRESHOLD), param_groups=None)
