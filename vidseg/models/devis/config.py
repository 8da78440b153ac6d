"""Config keys of DeVIS. The image stage (``DeformableDETRSegm``: Deformable DETR + the multi-scale mask head)
adds its mask-head keys on top of the detector's; the video model will add ``MODEL.DEVIS.*`` on top of those.

Key names and defaults are those of DeVIS's ``src/config.py`` (devis.md §1.1).
"""

from __future__ import annotations

from vidseg.config import CfgNode as CN
from vidseg.models.deformable_detr.config import add_deformable_detr_config

__all__ = ["add_image_stage_config", "add_devis_config"]


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


def add_devis_config(cfg: CN) -> None:
    """Add the image stage's keys, then the video model's (``MODEL.DEVIS.*``, ``SOLVER.DEVIS.*``,
    ``INPUT.DEVIS.*``, ``DATASETS.DEVIS.*``, ``TEST.CLIP_TRACKING.*``), with DeVIS's defaults (devis.md §1.1).

    The clip length is ``MODEL.DEVIS.NUM_FRAMES``; the data pipeline's ``INPUT.NUM_FRAMES`` must equal it
    (the builder says so in one line when it does not).
    """
    add_image_stage_config(cfg)
    m = cfg.MODEL
    m.MASK_HEAD.DEVIS = CN()
    m.MASK_HEAD.DEVIS.CONV_HEAD_3D = False  # VisTR-style 3-d conv head (ablations), mask head without out_lay
    m.MATCHER.USE_SUM_L1_DISTANCE = False  # L1 cost summed over the 4 coordinates instead of averaged

    m.DEVIS = CN()
    m.DEVIS.NUM_FRAMES = 6  # T; MODEL.NUM_QUERIES counts the queries of all T frames
    m.DEVIS.TEMPORAL_EMBEDDING = "learned"  # "learned" ([T, C] added per frame) | "sine" (x, y, t sine)
    a = m.DEVIS.DEFORMABLE_ATTENTION = CN()
    a.DISABLE_TEMPORAL_CONNECTIONS = False  # ablation: per-frame spatial attention in encoder and decoder
    a.ENC_CONNECT_ALL_FRAMES = True  # encoder samples all T-1 other frames
    a.ENC_TEMPORAL_WINDOW = 4  # otherwise a window of frames, offsets -W/2..W/2 reflected at the clip borders
    a.INSTANCE_AWARE_ATTENTION = True  # decoder samples around the same slot's box in the other frames
    a.ENC_N_POINTS_TEMPORAL_FRAME = 4  # K_temp of the encoder (0: no temporal connections)
    a.DEC_N_POINTS_TEMPORAL_FRAME = 4  # K_temp of the decoder

    s = cfg.SOLVER
    s.DEVIS = CN()
    s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_NAMES = ["temporal_sampling_offsets"]
    s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_MULT = 0.1
    # Stage 2 (MODEL.WEIGHTS a COCO image model): what is taken from it (devis.md §3.8).
    s.DEVIS.FINETUNE_QUERY_EMBEDDINGS = False  # False: query_embed re-initialised
    s.DEVIS.FINETUNE_TEMPORAL_MODULES = True  # temporal_* linears copied from the spatial ones
    s.DEVIS.FINETUNE_CLASS_LOGITS = False  # False: class_embed re-initialised

    i = cfg.INPUT
    i.DEVIS = CN()
    i.DEVIS.MULTI_SCALE_TRAIN = True  # False: VisTR's pipeline (ablations)
    i.DEVIS.SAMPLE_EACH_FRAME = False  # every frame can start a clip
    i.DEVIS.CREATE_BBX_FROM_MASK = True  # GT boxes from the augmented masks (what the pipeline does)

    cfg.DATASETS.DEVIS = CN()
    cfg.DATASETS.DEVIS.COCO_JOINT_TRAINING = False  # add COCO pseudo-videos (YT-19/21 category maps)

    cfg.TEST.USE_TOP_K = True
    c = cfg.TEST.CLIP_TRACKING = CN()  # the multi-cue clip tracker (devis.md §4)
    c.STRIDE = 4  # overlap = T - STRIDE
    c.PER_CLASS_MATCHING = False
    c.USE_BINARY_MASK_IOU = False
    c.USE_FRAME_AVERAGE_IOU = False
    c.FINAL_CLASS_POLICY = "most_common"  # | "score_weighting"
    c.FINAL_SCORE_POLICY = "mean"  # | "median"
    c.CLASS_COST = 1.0
    c.MASK_COST = 1.0
    c.SCORE_COST = 1.0
    c.CENTER_COST = 0.0
    c.MIN_FRAME_SCORE = 0.001
    c.MIN_TRACK_SCORE = 0.002
    c.MIN_DETECTIONS = 1
