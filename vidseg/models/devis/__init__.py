"""DeVIS (Caelles et al. 2022): deformable transformers for video instance segmentation.

One file per paper concept:

- ``config``: the keys (``add_image_stage_config`` chains to the detector's ``add_deformable_detr_config``).
- ``image_stage``: ``DeformableDETRSegm``, Deformable DETR + the multi-scale mask head (the COCO stage).
- ``mask_head``: the multi-scale mask head (attention maps over the encoder memory, the FPN-style conv head).
- ``clip_matcher``: trajectory-level Hungarian matching of instance-aware queries against GT instances.
- ``criterion``: the aux-layer loss weighting and the focal set criterion built from ``set_prediction``.
- ``targets``: data-pipeline targets to the per-image (or per-clip) form the criterion reads.
- ``param_groups``: DeVIS's learning-rate groups.
- ``postprocess``: top-k (query, class) pairs, box scaling, mask upsampling, COCO results.
- ``inference``: image-stage inference on images and videos.
- ``build``: config -> constructor kwargs.

The video model (temporal deformable attention composed into the Deformable DETR layers, instance-aware
queries, stage-2 weight adaptation) and the multi-cue clip tracker land here too.
"""

from __future__ import annotations

from typing import Any

from vidseg.models.devis.config import add_image_stage_config

__all__ = ["add_image_stage_config", "build_image_stage"]


def build_image_stage(cfg: Any, metadata: Any = None):
    """The image stage's ``ModelBundle`` (see :func:`vidseg.models.devis.build.build_image_stage`)."""
    from vidseg.models.devis.build import build_image_stage as _build

    return _build(cfg, metadata)
