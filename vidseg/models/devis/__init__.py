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

The video model:

- ``temporal``: the temporal deformable attention modules composed into the Deformable DETR layers.
- ``position``: the clip position encodings (learned temporal embedding, or x, y, t sine).
- ``video_model``: ``DeVIS`` (instance-aware queries, per-frame mask head, the ablations' 3-d conv head).
- ``clip_targets``: clip targets of spec §3.2 and the criterion adapter.
- ``clip_postprocess`` / ``clip_inference``: top-k trajectories per clip; per-clip video inference.

The multi-cue clip tracker lands here too.
"""

from __future__ import annotations

from typing import Any

from vidseg.models.devis.config import add_devis_config, add_image_stage_config

__all__ = ["add_devis_config", "add_image_stage_config", "build_devis", "build_image_stage"]


def build_image_stage(cfg: Any, metadata: Any = None):
    """The image stage's ``ModelBundle`` (see :func:`vidseg.models.devis.build.build_image_stage`)."""
    from vidseg.models.devis.build import build_image_stage as _build

    return _build(cfg, metadata)


def build_devis(cfg: Any, metadata: Any = None):
    """The video model's ``ModelBundle`` (see :func:`vidseg.models.devis.build.build_devis`)."""
    from vidseg.models.devis.build import build_devis as _build

    return _build(cfg, metadata)
