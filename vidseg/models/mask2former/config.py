"""Config keys of Mask2Former, detectron2-style as the VITA / GenVIS / GRAtt-VIS configs name them
(grattvis.md §1.4): ``MODEL.BACKBONE``, ``MODEL.RESNETS``, ``MODEL.SWIN``, ``MODEL.SEM_SEG_HEAD`` and
``MODEL.MASK_FORMER``. GRAtt-VIS's ``add_config`` chains to :func:`add_mask2former_config`.

Keys marked "vidseg" have no official counterpart (the official code hard-codes the value).
"""

from __future__ import annotations

from vidseg.config import CfgNode as CN

__all__ = ["add_mask2former_config"]


def add_mask2former_config(cfg: CN) -> None:
    """Add the Mask2Former keys to ``cfg`` in place (idempotent: keys already there are kept)."""
    m = cfg.MODEL
    if "MASK_FORMER" in m:
        return
    m.MASK_ON = True
    m.BACKBONE = CN()
    m.BACKBONE.NAME = "build_resnet_backbone"  # | "D2SwinTransformer"
    m.BACKBONE.FREEZE_AT = 0  # stages frozen from the stem (0: none; BN is always frozen)
    m.BACKBONE.PRETRAINED = (
        ""  # vidseg: ImageNet weights (torchvision / detectron2 .pkl / Swin) when no WEIGHTS
    )

    m.RESNETS = CN()
    m.RESNETS.DEPTH = 50  # 18 | 34 | 50 | 101
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.RESNETS.NORM = "FrozenBN"
    m.RESNETS.STRIDE_IN_1X1 = False  # the stride is on the 3x3 conv (the only layout implemented)
    m.RESNETS.RES5_DILATION = 1

    m.SWIN = CN()
    m.SWIN.EMBED_DIM = 192
    m.SWIN.DEPTHS = [2, 2, 18, 2]
    m.SWIN.NUM_HEADS = [6, 12, 24, 48]
    m.SWIN.WINDOW_SIZE = 12
    m.SWIN.PRETRAIN_IMG_SIZE = 384
    m.SWIN.DROP_PATH_RATE = 0.3
    m.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    h = m.SEM_SEG_HEAD = CN()
    h.NAME = "MaskFormerHead"
    h.NUM_CLASSES = 0  # 0: from the training dataset's metadata (COCO 80, OVIS 25, YouTube-VIS 40)
    h.IGNORE_VALUE = 255
    h.CONVS_DIM = 256
    h.MASK_DIM = 256
    h.NORM = "GN"
    h.COMMON_STRIDE = 4
    h.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    h.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    h.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    h.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    h.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8  # dead officially: the pixel decoder uses MASK_FORMER.NHEADS
    h.TRANSFORMER_ENC_LAYERS = 6
    h.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024  # vidseg (hard-coded 1024 officially)
    # vidseg: the official decoder always runs in fp32 (its CUDA op has no half kernel); False runs it under
    # the training/inference autocast (bf16 on the Triton MSDA).
    h.PIXEL_DECODER_FP32 = True

    f = m.MASK_FORMER = CN()
    f.TRANSFORMER_DECODER_NAME = "VitaMultiScaleMaskedTransformerDecoder"
    f.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    f.DEEP_SUPERVISION = True
    f.NO_OBJECT_WEIGHT = 0.1
    f.CLASS_WEIGHT = 2.0
    f.MASK_WEIGHT = 5.0
    f.DICE_WEIGHT = 5.0
    f.NHEADS = 8
    f.DROPOUT = 0.0
    f.DIM_FEEDFORWARD = 2048
    f.ENC_LAYERS = 0
    f.DEC_LAYERS = 10  # 9 decoder layers + the prediction on the initial queries
    f.PRE_NORM = False
    f.HIDDEN_DIM = 256
    f.NUM_OBJECT_QUERIES = 100
    f.ENFORCE_INPUT_PROJ = False
    f.SIZE_DIVISIBILITY = 32
    f.TRAIN_NUM_POINTS = 12544
    f.OVERSAMPLE_RATIO = 3.0
    f.IMPORTANCE_SAMPLE_RATIO = 0.75
    f.NUM_FRAME_QUERY_LAYERS = 3  # vidseg: VITA's MODEL.VITA.LAST_LAYER_NUM (frame queries kept in training)
    f.TEST = CN()
    f.TEST.INSTANCE_ON = True
    f.TEST.SEMANTIC_ON = False
    f.TEST.PANOPTIC_ON = False
    f.TEST.OBJECT_MASK_THRESHOLD = 0.8
    f.TEST.OVERLAP_THRESHOLD = 0.8

    _add_lsj_config(cfg.INPUT)

    if "DETECTIONS_PER_IMAGE" not in cfg.TEST:
        cfg.TEST.DETECTIONS_PER_IMAGE = 100  # top-k (query, class) pairs per image

    s = cfg.SOLVER
    s.BACKBONE_MULTIPLIER = 0.1
    s.WEIGHT_DECAY_NORM = 0.0
    s.WEIGHT_DECAY_EMBED = 0.0


def _add_lsj_config(inp: CN) -> None:
    """The large-scale-jitter keys (``vidseg.data.large_scale_jitter``) under both official spellings:
    Mask2Former's ``DATASET_MAPPER_NAME "coco_instance_lsj"`` with ``IMAGE_SIZE / MIN_SCALE / MAX_SCALE``, and
    VITA's ``LSJ_AUG.{ENABLED, IMAGE_SIZE, MIN_SCALE, MAX_SCALE}`` (which wins when both are on)."""
    if "DATASET_MAPPER_NAME" not in inp:
        # Official default "mask_former_semantic"; here "" is vidseg's multi-scale clip pipeline.
        inp.DATASET_MAPPER_NAME = ""
        inp.IMAGE_SIZE = 1024
        inp.MIN_SCALE = 0.1
        inp.MAX_SCALE = 2.0
    if "LSJ_AUG" not in inp:
        inp.LSJ_AUG = CN()
        inp.LSJ_AUG.ENABLED = False
        inp.LSJ_AUG.IMAGE_SIZE = 1024
        inp.LSJ_AUG.MIN_SCALE = 0.1
        inp.LSJ_AUG.MAX_SCALE = 2.0
