"""Config keys of DeVIS. The image stage (``DeformableDETRSegm``: Deformable DETR + the multi-scale mask head)
adds its mask-head keys on top of the detector's; the video model will add ``MODEL.DEVIS.*`` on top of those.

Key names and defaults are those of DeVIS's ``src/config.py`` (devis.md §1.1).
"""

from __future__ import annotations

from vidseg.config import CfgNode as CN
from vidseg.models.deformable_detr.config import add_deformable_detr_config

__all__ = ["add_image_stage_config"]


def add_image_stage_config(cfg: CN) -> None:
    """Add the detector keys, then the mask head's, to ``cfg`` in place."""
    add_deformable_detr_config(cfg)
    m = cfg.MODEL
    m.MASK_ON = True  # False: detection only (no mask head, no mask losses)
    m.SHIFT_CLASS_NEURON = False  # loading official D-DETR weights whose label = COCO cat id: move row 0 last

    m.MASK_HEAD = CN()
    m.MASK_HEAD.USE_MDC = True  # modulated deformable convs (False: plain 3x3 convs)
    m.MASK_HEAD.UPSAMPLING_RESOLUTIONS = ["/32", "/16", "/8"]  # levels with multi-head attention maps
    # FPN inputs of the conv head, coarse to fine:
    # [resolution, "encoded" | "backbone" | "compressed_backbone"]
    m.MASK_HEAD.USED_FEATURES = [
        ["/32", "encoded"],
        ["/16", "encoded"],
        ["/8", "encoded"],
        ["/4", "backbone"],
    ]

    m.LOSS.AUX_LOSS_WEIGHTING = False  # DeVIS per-layer 1/30..15/30 weighting (devis.md §3.5)
    m.LOSS.MASK_AUX_LOSS = [2]  # decoder layers (0-based aux index, 0..4) that also get mask losses
    m.LOSS.SEGM_MASK_COEF = 1.0  # COCO stage configs: 8.0
    m.LOSS.SEGM_DICE_COEF = 1.0  # COCO stage configs: 8.0

    s = cfg.SOLVER
    s.LR_MASK_HEAD_NAMES = ["bbox_attention", "mask_head"]
    s.LR_MASK_HEAD_MULT = 1.0
