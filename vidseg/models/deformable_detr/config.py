"""Config keys of the Deformable DETR detector (backbone, transformer, queries, box losses and matcher costs).

Key names and defaults are those of DeVIS's ``src/config.py`` (devis.md §1.1), so seed override commands keep
working. The DeVIS image stage adds its mask-head keys on top (``vidseg.models.devis.config``).
"""

from __future__ import annotations

from vidseg.backbones.config import add_backbone_config
from vidseg.config import CfgNode as CN

__all__ = ["add_deformable_detr_config"]


def add_deformable_detr_config(cfg: CN) -> None:
    """Add the detector keys (and the backbone keys) to ``cfg`` in place."""
    add_backbone_config(cfg)
    m = cfg.MODEL
    m.NUM_CLASSES = 0  # K outputs of class_embed; 0 = from the training dataset's metadata (COCO: 91)
    m.NUM_QUERIES = 300
    m.HIDDEN_DIM = 256
    m.DIM_FEEDFORWARD = 1024
    m.DROPOUT = 0.1
    m.NUM_FEATURE_LEVELS = 4  # 4: /8,/16,/32,/64; 3: /8,/16,/32; 1: /32 only
    m.WITH_BBX_REFINE = True  # iterative box refinement (separate heads per decoder layer)
    m.BBX_GRADIENT_PROP = False  # True: refined boxes are not detached between decoder layers (DeVIS)
    # xy-only refinement of the 2-d reference points (per-layer MLP -> dxy); exclusive with WITH_BBX_REFINE
    m.WITH_REF_POINT_REFINE = False

    m.TRANSFORMER = CN()
    m.TRANSFORMER.ENCODER_LAYERS = 6
    m.TRANSFORMER.DECODER_LAYERS = 6
    m.TRANSFORMER.N_HEADS = 8
    m.TRANSFORMER.ENC_N_POINTS = 4  # sampling points per head and level
    m.TRANSFORMER.DEC_N_POINTS = 4

    m.LOSS = CN()
    m.LOSS.AUX_LOSS = True  # losses on every decoder layer
    m.LOSS.FOCAL_LOSS = True  # the only classification loss implemented (as in DeVIS)
    m.LOSS.FOCAL_ALPHA = 0.25
    m.LOSS.CLASS_COEF = 2.0
    m.LOSS.BBX_L1_COEF = 5.0
    m.LOSS.BBX_GIOU_COEF = 2.0

    m.MATCHER = CN()
    m.MATCHER.CLASS_COST = 2.0
    m.MATCHER.BBX_L1_COST = 5.0
    m.MATCHER.BBX_GIOU_COST = 2.0

    s = cfg.SOLVER
    s.LR_BACKBONE = 2e-5  # absolute LR of parameters matching BACKBONE_NAMES (0 freezes the backbone)
    s.BACKBONE_NAMES = ["backbone.0"]
    s.LR_LINEAR_PROJ_NAMES = ["self_attn.sampling_offsets", "cross_attn.sampling_offsets", "reference_points"]
    s.LR_LINEAR_PROJ_MULT = 0.1

    cfg.TEST.NUM_OUT = 100  # top-k (query, class) pairs kept per image (COCO configs: 50)
