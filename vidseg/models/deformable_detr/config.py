"""Config keys of the image stage ``DeformableDETRSegm`` (Deformable DETR + multi-scale mask head on COCO).

Key names and defaults are those of DeVIS's ``src/config.py`` (devis.md §1.1), so seed override commands keep
working. Only keys the image stage reads are defined here; the video method registers its own.
"""

from __future__ import annotations

from vidseg.config import CfgNode as CN
from vidseg.config import register_config_extender

__all__ = ["add_deformable_detr_config"]


@register_config_extender("DeformableDETRSegm")
def add_deformable_detr_config(cfg: CN) -> None:
    """Add the Deformable DETR / mask-head keys to ``cfg`` in place."""
    m = cfg.MODEL
    m.BACKBONE = "resnet50"  # resnet18|34|50|101, swin_{t,s,b}_p4w7, swin_l_p4w7, swin_l_p4w12
    m.BACKBONE_DILATION = False  # DC5 (ResNet-50/101 only)
    m.BACKBONE_PRETRAINED = ""  # ImageNet weights (torchvision / original Swin naming); "" = random init
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
    m.MASK_ON = True  # False: detection only (no mask head, no mask losses)
    m.SHIFT_CLASS_NEURON = False  # loading official D-DETR weights whose label = COCO cat id: move row 0 last

    m.TRANSFORMER = CN()
    m.TRANSFORMER.ENCODER_LAYERS = 6
    m.TRANSFORMER.DECODER_LAYERS = 6
    m.TRANSFORMER.N_HEADS = 8
    m.TRANSFORMER.ENC_N_POINTS = 4  # sampling points per head and level
    m.TRANSFORMER.DEC_N_POINTS = 4

    m.MASK_HEAD = CN()
    m.MASK_HEAD.USE_MDC = True  # modulated deformable convs (False: plain 3x3 convs)
    m.MASK_HEAD.UPSAMPLING_RESOLUTIONS = ["/32", "/16", "/8"]  # levels with multi-head attention maps
    # FPN inputs of the conv head, coarse to fine: [resolution, "encoded" | "backbone" |
    # "compressed_backbone"]
    m.MASK_HEAD.USED_FEATURES = [
        ["/32", "encoded"],
        ["/16", "encoded"],
        ["/8", "encoded"],
        ["/4", "backbone"],
    ]

    m.LOSS = CN()
    m.LOSS.AUX_LOSS = True  # losses on every decoder layer
    m.LOSS.AUX_LOSS_WEIGHTING = False  # DeVIS per-layer 1/30..15/30 weighting (devis.md §3.5)
    m.LOSS.FOCAL_LOSS = True  # the only classification loss implemented (as in DeVIS)
    m.LOSS.FOCAL_ALPHA = 0.25
    m.LOSS.MASK_AUX_LOSS = [2]  # decoder layers (0-based aux index, 0..4) that also get mask losses
    m.LOSS.CLASS_COEF = 2.0
    m.LOSS.BBX_L1_COEF = 5.0
    m.LOSS.BBX_GIOU_COEF = 2.0
    m.LOSS.SEGM_MASK_COEF = 1.0  # COCO stage configs: 8.0
    m.LOSS.SEGM_DICE_COEF = 1.0  # COCO stage configs: 8.0

    m.MATCHER = CN()
    m.MATCHER.CLASS_COST = 2.0
    m.MATCHER.BBX_L1_COST = 5.0
    m.MATCHER.BBX_GIOU_COST = 2.0

    s = cfg.SOLVER
    s.LR_BACKBONE = 2e-5  # absolute LR of parameters matching BACKBONE_NAMES (0 freezes the backbone)
    s.BACKBONE_NAMES = ["backbone.0"]
    s.LR_LINEAR_PROJ_NAMES = ["self_attn.sampling_offsets", "cross_attn.sampling_offsets", "reference_points"]
    s.LR_LINEAR_PROJ_MULT = 0.1
    s.LR_MASK_HEAD_NAMES = ["bbox_attention", "mask_head"]
    s.LR_MASK_HEAD_MULT = 1.0

    cfg.TEST.NUM_OUT = 100  # top-k (query, class) pairs kept per image (COCO configs: 50)
