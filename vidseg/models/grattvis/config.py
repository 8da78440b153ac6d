"""Config keys of GRAtt-VIS (grattvis.md §1.4): the Mask2Former keys, VITA's ``MODEL.VITA.*`` and the
``MODEL.GENVIS.*`` keys users type (``MODEL.GENVIS.USE_MEM False MODEL.GENVIS.GATED_PROP True``), plus the
data keys of VITA's ``add_vita_config`` (``INPUT.PSEUDO.*``, ``DATASETS.DATASET_RATIO``).

Defaults are those of the official ``add_*_config`` functions (VITA's ``vita/config.py`` and GRAtt-VIS's
``grattvis/config.py``); the shipped yaml files set the GRAtt values (``LEN_CLIP_WINDOW 1``,
``GATED_PROP True``, ``GATE_WEIGHT 0.0``, ...).

The official yaml files also set keys that vidseg spells differently or never reads. They are declared here so
that an official file loads unchanged:

- :data:`OFFICIAL_ALIASES`: official key -> the vidseg key with the same meaning. They default to ``None``
  ("not given"); a file or override that gives one sets the vidseg key as well (the last spelling given wins;
  ``SOLVER.CLIP_GRADIENTS.ENABLED False`` means ``SOLVER.GRAD_CLIP_MAX_NORM 0``).
- :data:`DEAD_KEYS`: keys the official code sets but does not read (deeplab / detectron2 leftovers). Their
  values are kept, never used.
"""

from __future__ import annotations

from typing import Any

from vidseg.config import CfgNode as CN
from vidseg.config import register_alias
from vidseg.models.mask2former.config import add_mask2former_config

__all__ = [
    "DEAD_KEYS",
    "GRATTVIS_META_ARCHITECTURES",
    "OFFICIAL_ALIASES",
    "add_grattvis_config",
    "resolve_official_aliases",
]

# META_ARCHITECTURE spellings of the method: the official yaml's "Grattvis", the earlier commit's "Genvis",
# and the head's class name.
GRATTVIS_META_ARCHITECTURES = ("Grattvis", "Genvis", "GRAttVIS")

# Official key -> vidseg key (same meaning, vidseg's spelling), registered with the config layer
# (:func:`vidseg.config.register_alias`): a file or override giving the official key sets the vidseg key too.
OFFICIAL_ALIASES: dict[str, str] = {
    "INPUT.SAMPLING_FRAME_NUM": "INPUT.NUM_FRAMES",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": "SOLVER.GRAD_CLIP_MAX_NORM",
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "SOLVER.GRAD_CLIP_TYPE",
    "SOLVER.LR_SCHEDULER_NAME": "SOLVER.SCHEDULE",
}


def _clip_value(value: Any, cfg: CN) -> Any:
    # CLIP_VALUE counts only while CLIP_GRADIENTS.ENABLED is not False.
    return 0.0 if cfg.SOLVER.CLIP_GRADIENTS.get("ENABLED") is False else float(value)


def _clip_enabled(value: Any, cfg: CN) -> Any:
    # ENABLED False: no clipping; True: the CLIP_VALUE given (None: leave GRAD_CLIP_MAX_NORM as it is).
    return 0.0 if value is False else cfg.SOLVER.CLIP_GRADIENTS.get("CLIP_VALUE")


def _scheduler(value: Any, cfg: CN) -> Any:
    # detectron2's WarmupMultiStepLR by iteration is vidseg's "iter" schedule; other names are passed on
    # (and rejected by the engine with the list of schedules it has).
    del cfg
    return "iter" if value == "WarmupMultiStepLR" else value


register_alias("INPUT.SAMPLING_FRAME_NUM", "INPUT.NUM_FRAMES")
register_alias("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "SOLVER.GRAD_CLIP_MAX_NORM", _clip_value)
register_alias("SOLVER.CLIP_GRADIENTS.ENABLED", "SOLVER.GRAD_CLIP_MAX_NORM", _clip_enabled, mirror=False)
register_alias("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "SOLVER.GRAD_CLIP_TYPE")
register_alias("SOLVER.LR_SCHEDULER_NAME", "SOLVER.SCHEDULE", _scheduler)

# Keys the official configs set that no official GRAtt-VIS code path reads (grattvis.md §1.4), or whose only
# value is the one vidseg implements. name -> default.
DEAD_KEYS: dict[str, Any] = {
    "VERSION": 2,
    "MODEL.RESNETS.STEM_TYPE": "basic",
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.RES5_MULTI_GRID": [1, 1, 1],
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.PATCH_SIZE": 4,
    "MODEL.SWIN.MLP_RATIO": 4.0,
    "MODEL.SWIN.QKV_BIAS": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.DROP_RATE": 0.0,
    "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
    "MODEL.SWIN.USE_CHECKPOINT": False,
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 1.0,
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": "hard_pixel_mining",
    "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES": ["res2"],
    "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS": [48],
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 256,
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [6, 12, 18],
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": 0.1,
    "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV": False,
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",  # vidseg draws one size per clip (the only mode)
    "INPUT.AUGMENTATIONS": [],  # "brightness" | "contrast" | "saturation" | "rotation" (VITA: none on videos)
    "INPUT.CROP.TYPE": "absolute_range",  # the only crop type vidseg implements
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.NESTEROV": False,
    "SOLVER.WEIGHT_DECAY_BIAS": None,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.REFERENCE_WORLD_SIZE": 0,
    "TEST.AUG.ENABLED": False,
    "TEST.AUG.MIN_SIZES": (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
    "TEST.AUG.MAX_SIZE": 4000,
    "TEST.AUG.FLIP": True,
    "TEST.EXPECTED_RESULTS": [],
    "TEST.PRECISE_BN.ENABLED": False,
    "TEST.PRECISE_BN.NUM_ITER": 200,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    "DATALOADER.ASPECT_RATIO_GROUPING": True,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
    "DATALOADER.REPEAT_THRESHOLD": 0.0,
    "CUDNN_BENCHMARK": False,
    "VIS_PERIOD": 0,
    "GLOBAL.HACK": 1.0,
}


def _declare(cfg: CN, key: str, value: Any) -> None:
    """Create ``key`` (dotted) with ``value`` unless it exists; missing sections are created."""
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node:
            node[part] = CN()
        node = node[part]
    if parts[-1] not in node:
        node[parts[-1]] = value


def add_grattvis_config(cfg: CN) -> None:
    """Add the Mask2Former keys, then VITA's and GRAtt-VIS's, to ``cfg`` in place (idempotent)."""
    add_mask2former_config(cfg)
    m = cfg.MODEL
    if "GENVIS" in m:
        return

    v = m.VITA = CN()  # the VIS head (VITA's object encoder / decoder), defaults of vita/config.py
    v.NHEADS = 8
    v.DROPOUT = 0.0
    v.DIM_FEEDFORWARD = 2048
    v.HIDDEN_DIM = 256
    v.NUM_OBJECT_QUERIES = 100
    v.PRE_NORM = False
    v.ENC_LAYERS = 6  # object encoder layers
    v.DEC_LAYERS = 3
    v.ENC_WINDOW_SIZE = 0  # shifted-window size of the object encoder; 0: all frames (GRAtt yaml: 0)
    v.ENFORCE_INPUT_PROJ = True
    v.NO_OBJECT_WEIGHT = 0.1
    v.DEEP_SUPERVISION = True
    v.LAST_LAYER_NUM = 3  # detector decoder layers whose frame queries the head trains on
    v.MULTI_CLS_ON = True  # plain VITA inference only
    v.APPLY_CLS_THRES = 0.01  # plain VITA inference only
    v.SIM_USE_CLIP = True
    v.SIM_WEIGHT = 0.5
    v.FREEZE_DETECTOR = False  # GRAtt yaml: True (only vita_module trains)
    v.TEST_RUN_CHUNK_SIZE = 18  # plain VITA inference only
    v.TEST_INTERPOLATE_CHUNK_SIZE = 5  # plain VITA inference only

    g = m.GENVIS = CN()  # the official names (grattvis/config.py); the GRAtt yaml values in the comments
    g.LEN_CLIP_WINDOW = 5  # frames per propagation step (GRAtt: 1, fully online)
    g.GATED_PROP = False  # the GRAtt block: gate, gated residual, gate-masked self-attention (GRAtt: True)
    g.USE_MEM = False  # GenVIS's query memory (GRAtt: False for OVIS R50, True elsewhere; see the checkpoint)
    g.GATE_WEIGHT = 1.0  # weight of the gate loss (GRAtt: 0.0, the gate learns through straight-through only)

    inp = cfg.INPUT
    # VITA's clip sampling keys; vidseg's INPUT.NUM_FRAMES is the clip length (official SAMPLING_FRAME_NUM).
    _declare(cfg, "INPUT.SAMPLING_FRAME_RANGE", 20)
    _declare(cfg, "INPUT.SAMPLING_FRAME_SHUFFLE", False)
    p = inp.PSEUDO = CN()  # COCO pseudo-video clips (coco2<target>_train); VITA's defaults
    p.AUGMENTATIONS = ["rotation"]  # per-frame random rotation (VITA's pseudo-video motion)
    p.MIN_SIZE_TRAIN = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768)
    p.MAX_SIZE_TRAIN = 768
    p.MIN_SIZE_TRAIN_SAMPLING = "choice_by_clip"
    p.CROP = CN()
    p.CROP.ENABLED = False
    p.CROP.TYPE = "absolute_range"
    p.CROP.SIZE = (384, 600)

    # Per dataset of DATASETS.TRAIN, the weight with which a batch element is drawn from it ([] : one dataset,
    # or all concatenated). OVIS: [1.0, 0.25] = 80% COCO pseudo-videos, 20% OVIS clips.
    _declare(cfg, "DATASETS.DATASET_RATIO", [])

    # The common defaults that the official pipeline (detectron2 + VITA's mappers) has otherwise, so that an
    # official yaml, which relies on them, trains as officially: by iteration, VITA's clip sampling and
    # moving crop, no photometric distortion, detectron2's test size cap and checkpoint period, no evaluation
    # during training.
    cfg.SOLVER.SCHEDULE = "iter"
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000
    cfg.TEST.EVAL_PERIOD = 0
    inp.SAMPLER = "reference_range"
    inp.CROP.MOVING = True
    inp.PHOTOMETRIC = False
    inp.MAX_SIZE_TEST = 1333

    for key in (*OFFICIAL_ALIASES, "SOLVER.CLIP_GRADIENTS.ENABLED"):  # None: not given
        _declare(cfg, key, None)
    for key, value in DEAD_KEYS.items():
        _declare(cfg, key, value)


def _value(cfg: CN, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, CN) else None
    return node


def resolve_official_aliases(cfg: CN) -> list[str]:
    """Notes on the official keys a config gave (``official value -> vidseg key value``), for a log line.

    The values themselves are copied while the files merge (:data:`OFFICIAL_ALIASES`); ``cfg`` is unchanged.
    """
    notes = []
    for official, ours in OFFICIAL_ALIASES.items():
        given = _value(cfg, official)
        if given is not None:
            notes.append(f"{official} {given!r} -> {ours} {_value(cfg, ours)!r}")
    return notes
