"""GRAtt-VIS (Hannan et al. 2023): online VIS with gated residual attention, built on VITA and GenVIS.

A GRAtt-VIS model *has* a per-frame Mask2Former (``vidseg.models.mask2former``, frozen by default) and a VIS
head; nothing here inherits from another paper's class. Where each part goes:

- ``gate.py``: the GRAtt block: the gate logits, the Gumbel-sigmoid gate (straight-through in training,
  ``logit >= 0`` at test), the gated residual and the gate-driven self-attention bias.
- ``memory.py``: the query memory carried from clip to clip (GenVIS's ``USE_MEM``).
- ``uvla.py``: GenVIS's unified video label assignment.
- ``vis_head.py``: input projection, object encoder, the decoder layers with the GRAtt block, the heads.
- ``criterion.py``: the video losses (CE, mask BCE / dice on sampled points, similarity).
- ``joint_criterion.py``: those plus the detector's per-frame Mask2Former losses (``FREEZE_DETECTOR False``).
- ``model.py``: detector + head, training over clips of a video.
- ``inference.py``: online inference, frame by frame, with the memory.
- ``config.py`` / ``build.py``: keys (chaining to ``add_mask2former_config``) and builders.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GRAttVIS",
    "GRAttVISCriterion",
    "GRAttVISHead",
    "GRAttVISInference",
    "GRAttVISJointCriterion",
    "OnlineState",
    "add_grattvis_config",
    "build_grattvis",
    "grattvis_criterion",
]

# Public name -> its module, imported on first use (``vidseg.models.METHODS`` imports this package to read
# its config, which must not build the model's modules).
_EXPORTS = {
    "GRAttVIS": "model",
    "OnlineState": "model",
    "GRAttVISHead": "vis_head",
    "GRAttVISCriterion": "criterion",
    "grattvis_criterion": "criterion",
    "GRAttVISJointCriterion": "joint_criterion",
    "GRAttVISInference": "inference",
    "add_grattvis_config": "config",
    "build_grattvis": "build",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
