"""GRAtt-VIS config keys: official defaults, official yaml files load unchanged, aliases reach vidseg keys."""

from __future__ import annotations

import pytest

from vidseg.config import ConfigError, config_from_dict, config_to_dict, get_cfg, load_config, merge_overrides
from vidseg.models.grattvis.config import (
    DEAD_KEYS,
    GRATTVIS_META_ARCHITECTURES,
    OFFICIAL_ALIASES,
    add_grattvis_config,
    resolve_official_aliases,
)


def _extend(cfg, meta):
    assert meta in GRATTVIS_META_ARCHITECTURES + ("Vita",)
    add_grattvis_config(cfg)


# An official-style chain (the GRAtt OVIS R50 yaml on a VITA-style base): tuples written as strings, dead keys
# of detectron2 / deeplab, and VITA's key spellings.
_BASE = """
MODEL:
  BACKBONE: {FREEZE_AT: 0, NAME: "build_resnet_backbone"}
  RESNETS:
    DEPTH: 50
    STEM_TYPE: "basic"  # not used
    STEM_OUT_CHANNELS: 64
    STRIDE_IN_1X1: False
    RES5_MULTI_GRID: [1, 1, 1]  # not used
  SEM_SEG_HEAD: {NUM_CLASSES: 25, LOSS_WEIGHT: 1.0}
  VITA: {ENC_WINDOW_SIZE: 6, SIM_WEIGHT: 0.5}
DATASETS:
  TRAIN: ("ytvis_2019_train",)
  TEST: ("ytvis_2019_val",)
SOLVER:
  BASE_LR: 5e-5
  STEPS: (50000, 125000)
  CLIP_GRADIENTS: {ENABLED: True, CLIP_TYPE: "full_model", CLIP_VALUE: 0.01, NORM_TYPE: 2.0}
INPUT:
  SAMPLING_FRAME_NUM: 6
  SAMPLING_FRAME_RANGE: 8
  MIN_SIZE_TRAIN_SAMPLING: "choice_by_clip"
  AUGMENTATIONS: []
  MIN_SIZE_TRAIN: (288, 320, 352, 384, 416, 448, 480, 512)
  CROP:
    ENABLED: True
    TYPE: "absolute_range"
    SIZE: (384, 600)
  PSEUDO:
    AUGMENTATIONS: ['rotation']
    MIN_SIZE_TRAIN: (288, 320, 352, 384, 416, 448, 480, 512)
    CROP:
      ENABLED: True
      TYPE: "absolute_range"
      SIZE: (384, 600)
  LSJ_AUG: {ENABLED: False, IMAGE_SIZE: 768}
DATALOADER: {FILTER_EMPTY_ANNOTATIONS: True, NUM_WORKERS: 8}
TEST: {DETECTIONS_PER_IMAGE: 20}
VERSION: 2
"""

_GRATT = """
_BASE_: base.yaml
MODEL:
  META_ARCHITECTURE: "Grattvis"
  WEIGHTS: "vita_r50_ovis.pth"
  VITA: {ENC_WINDOW_SIZE: 0, FREEZE_DETECTOR: True}
  GENVIS: {LEN_CLIP_WINDOW: 1, GATED_PROP: True, USE_MEM: False, GATE_WEIGHT: 0.0}
DATASETS:
  DATASET_RATIO: [1.0, 0.25]
  TRAIN: ( "coco2ovis_train","ovis_train" )
  TEST: ("ovis_val",)
SOLVER:
  IMS_PER_BATCH: 8
  STEPS: (100000,)
  MAX_ITER: 140000
INPUT: {SAMPLING_FRAME_NUM: 5, SAMPLING_FRAME_RANGE: 6, SAMPLING_FRAME_SHUFFLE: False}
"""


def _official(tmp_path):
    (tmp_path / "base.yaml").write_text(_BASE)
    (tmp_path / "gratt.yaml").write_text(_GRATT)
    return tmp_path / "gratt.yaml"


def test_defaults_are_the_official_add_config_values():
    cfg = get_cfg("Grattvis", _extend)
    v, g = cfg.MODEL.VITA, cfg.MODEL.GENVIS
    assert (v.NHEADS, v.DIM_FEEDFORWARD, v.HIDDEN_DIM, v.NUM_OBJECT_QUERIES) == (8, 2048, 256, 100)
    assert (v.ENC_LAYERS, v.DEC_LAYERS, v.ENC_WINDOW_SIZE, v.LAST_LAYER_NUM) == (6, 3, 0, 3)
    assert v.ENFORCE_INPUT_PROJ is True and v.FREEZE_DETECTOR is False and v.SIM_WEIGHT == 0.5
    assert (v.TEST_RUN_CHUNK_SIZE, v.TEST_INTERPOLATE_CHUNK_SIZE, v.APPLY_CLS_THRES) == (18, 5, 0.01)
    assert (g.LEN_CLIP_WINDOW, g.GATED_PROP, g.USE_MEM, g.GATE_WEIGHT) == (5, False, False, 1.0)
    assert cfg.INPUT.PSEUDO.AUGMENTATIONS == ["rotation"] and cfg.INPUT.PSEUDO.CROP.ENABLED is False
    assert cfg.DATASETS.DATASET_RATIO == []
    # the official pipeline's defaults where vidseg's common ones differ (an official yaml relies on them)
    assert (cfg.SOLVER.SCHEDULE, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD) == ("iter", 5000, 0)
    assert cfg.INPUT.SAMPLER == "reference_range" and cfg.INPUT.CROP.MOVING and not cfg.INPUT.PHOTOMETRIC
    assert cfg.INPUT.MAX_SIZE_TEST == 1333
    # chained: the detector's keys are there
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 0


def test_add_config_is_idempotent_and_keeps_values():
    cfg = get_cfg("Grattvis", _extend)
    cfg.MODEL.GENVIS.USE_MEM = True
    add_grattvis_config(cfg)
    assert cfg.MODEL.GENVIS.USE_MEM is True


def test_official_yaml_chain_loads_unchanged(tmp_path):
    cfg = load_config(_official(tmp_path), [], True, _extend)
    assert cfg.DATASETS.TRAIN == ("coco2ovis_train", "ovis_train")  # a yaml string read as a tuple
    assert cfg.DATASETS.DATASET_RATIO == [1.0, 0.25]
    assert cfg.SOLVER.STEPS == (100000,) and cfg.SOLVER.BASE_LR == pytest.approx(5e-5)
    assert cfg.MODEL.VITA.ENC_WINDOW_SIZE == 0 and cfg.MODEL.VITA.FREEZE_DETECTOR is True
    assert cfg.MODEL.GENVIS.GATED_PROP is True and cfg.MODEL.GENVIS.GATE_WEIGHT == 0.0
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 5 and cfg.INPUT.SAMPLING_FRAME_RANGE == 6
    assert cfg.INPUT.PSEUDO.CROP.SIZE == (384, 600) and cfg.INPUT.PSEUDO.CROP.ENABLED is True
    assert cfg.MODEL.RESNETS.RES5_MULTI_GRID == [1, 1, 1] and cfg.VERSION == 2


def test_the_users_override_command_loads(tmp_path):
    opts = ["MODEL.GENVIS.USE_MEM", "False", "MODEL.GENVIS.GATED_PROP", "True", "MODEL.WEIGHTS", "w.pth"]
    cfg = load_config(_official(tmp_path), opts, True, _extend)
    assert cfg.MODEL.GENVIS.USE_MEM is False and cfg.MODEL.WEIGHTS == "w.pth"


def test_unknown_key_still_names_the_file_and_the_close_key(tmp_path):
    _official(tmp_path)
    (tmp_path / "bad.yaml").write_text("_BASE_: gratt.yaml\nMODEL:\n  GENVIS:\n    USE_MEMORY: True\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*MODEL\.GENVIS\.USE_MEMORY.*MODEL\.GENVIS\.USE_MEM"):
        load_config(tmp_path / "bad.yaml", [], True, _extend)


def test_official_spellings_set_the_vidseg_keys_while_merging(tmp_path):
    cfg = load_config(_official(tmp_path), [], True, _extend)
    assert cfg.INPUT.NUM_FRAMES == 5  # INPUT.SAMPLING_FRAME_NUM: 6 in the base, 5 in the GRAtt file
    assert cfg.SOLVER.GRAD_CLIP_MAX_NORM == pytest.approx(0.01) and cfg.SOLVER.GRAD_CLIP_TYPE == "full_model"
    assert cfg.SOLVER.SCHEDULE == "iter"  # LR_SCHEDULER_NAME not given: detectron2's WarmupMultiStepLR
    notes = resolve_official_aliases(cfg)
    assert "INPUT.SAMPLING_FRAME_NUM 5 -> INPUT.NUM_FRAMES 5" in notes and len(notes) == 3

    opts = ["SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.CLIP_GRADIENTS.ENABLED", "False"]
    cfg = load_config(_official(tmp_path), opts, True, _extend)
    assert cfg.SOLVER.SCHEDULE == "iter" and cfg.SOLVER.GRAD_CLIP_MAX_NORM == 0.0
    cfg = load_config(_official(tmp_path), opts + ["SOLVER.CLIP_GRADIENTS.ENABLED", "True"], True, _extend)
    assert cfg.SOLVER.GRAD_CLIP_MAX_NORM == pytest.approx(0.01)  # back to the CLIP_VALUE given


def test_the_last_spelling_given_wins_and_a_saved_config_reloads_the_same(tmp_path):
    cfg = load_config(_official(tmp_path), ["INPUT.NUM_FRAMES", "3"], True, _extend)
    assert cfg.INPUT.NUM_FRAMES == 3 and cfg.INPUT.SAMPLING_FRAME_NUM is None  # the vidseg key, given last
    cfg2 = load_config(
        _official(tmp_path), ["INPUT.NUM_FRAMES", "3", "INPUT.SAMPLING_FRAME_NUM", "4"], True, _extend
    )
    assert cfg2.INPUT.NUM_FRAMES == 4
    for c in (cfg, cfg2):
        again = config_from_dict(config_to_dict(c), _extend)
        assert again.INPUT.NUM_FRAMES == c.INPUT.NUM_FRAMES


def test_methods_without_the_official_keys_are_untouched():
    cfg = get_cfg()
    merge_overrides(cfg, ["INPUT.NUM_FRAMES", "4"])
    assert cfg.INPUT.NUM_FRAMES == 4 and "SAMPLING_FRAME_NUM" not in cfg.INPUT


def test_declared_official_keys_exist_with_their_defaults():
    cfg = get_cfg("Genvis", _extend)
    for key, value in DEAD_KEYS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    for key in OFFICIAL_ALIASES:
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node is None, key


# ------------------------------------------------------------------------------------------ shipped configs
# The table of grattvis.md §1.4 (and the seed README's rows): file -> (USE_MEM, TRAIN, DATASET_RATIO, STEPS,
# MAX_ITER, DETECTIONS_PER_IMAGE, NUM_CLASSES, TEST).
_OVIS = (["coco2ovis_train", "ovis_train"], [1.0, 0.25])
_YT19 = (["coco2ytvis2019_train", "ytvis_2019_train"], [1.0, 0.75])
_YT21 = (["coco2ytvis2021_train", "ytvis_2021_train"], [1.0, 0.75])
TABLE = {  # configs/grattvis/<set>/grattvis_<backbone>_bs8.yaml
    ("ovis", "R50"): (False, *_OVIS, [100000], 140000, 20, 25, "ovis_val"),
    ("ovis", "SWIN"): (True, *_OVIS, [100000], 140000, 20, 25, "ovis_val"),
    ("youtubevis_2019", "R50"): (True, *_YT19, [10000], 15000, 10, 40, "ytvis_2019_val"),
    ("youtubevis_2019", "SWIN"): (True, *_YT19, [10000, 15000], 20000, 10, 40, "ytvis_2019_val"),
    ("youtubevis_2021", "R50"): (True, *_YT21, [50000], 90000, 10, 40, "ytvis_2021_val"),
    ("youtubevis_2021", "SWIN"): (True, *_YT21, [50000], 90000, 10, 40, "ytvis_2021_val"),
    ("youtubevis_2022", "R50"): (True, *_YT21, [50000], 90000, 10, 40, "ytvis_2022_val"),
    ("youtubevis_2022", "SWIN"): (True, *_YT21, [50000], 90000, 10, 40, "ytvis_2022_val"),
}


@pytest.mark.parametrize("which", sorted(TABLE))
def test_shipped_grattvis_config_has_the_official_values(which):
    use_mem, train, ratio, steps, max_iter, dets, ncls, test = TABLE[which]
    path = "grattvis/{}/grattvis_{}_bs8.yaml".format(*which)
    cfg = load_config(path, [], True, _extend)
    assert cfg.MODEL.META_ARCHITECTURE == "Grattvis"
    g = cfg.MODEL.GENVIS
    assert (g.USE_MEM, g.GATED_PROP, g.LEN_CLIP_WINDOW, g.GATE_WEIGHT) == (use_mem, True, 1, 0.0)
    assert list(cfg.DATASETS.TRAIN) == train and cfg.DATASETS.DATASET_RATIO == ratio
    assert list(cfg.DATASETS.TEST) == [test]
    assert list(cfg.SOLVER.STEPS) == steps and cfg.SOLVER.MAX_ITER == max_iter
    assert cfg.TEST.DETECTIONS_PER_IMAGE == dets and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == ncls
    # common to every GRAtt config (§1.4, §4.6)
    assert cfg.MODEL.VITA.ENC_WINDOW_SIZE == 0 and cfg.MODEL.VITA.FREEZE_DETECTOR is True
    assert (cfg.INPUT.NUM_FRAMES, cfg.INPUT.SAMPLING_FRAME_RANGE) == (5, 6)
    assert cfg.INPUT.SAMPLER == "reference_range"
    assert cfg.SOLVER.IMS_PER_BATCH == 8 and cfg.SOLVER.BASE_LR == pytest.approx(5e-5)
    assert cfg.SOLVER.SCHEDULE == "iter" and cfg.SOLVER.GRAD_CLIP_MAX_NORM == pytest.approx(0.01)
    assert cfg.SOLVER.WEIGHT_DECAY == pytest.approx(0.05) and cfg.SOLVER.AMP.ENABLED is True
    assert cfg.INPUT.CROP.MOVING is True and cfg.INPUT.PSEUDO.AUGMENTATIONS == ["rotation"]
    swin = "SWIN" in path
    assert cfg.MODEL.BACKBONE.NAME == ("D2SwinTransformer" if swin else "build_resnet_backbone")
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == (200 if swin else 100)
    assert cfg.INPUT.MIN_SIZE_TEST == (448 if swin and "ovis" not in path else 360)


@pytest.mark.parametrize(
    "path",
    [
        f"vita/{d}/{f}"
        for d in ("ovis", "youtubevis_2019", "youtubevis_2021")
        for f in ("vita_R50_bs8.yaml", "vita_SWIN_bs8.yaml")
    ]
    + [f"vita/youtubevis_{y}/Base-YouTubeVIS-VideoInstanceSegmentation.yaml" for y in (2019, 2021)],
)
def test_shipped_vita_bases_load_with_the_grattvis_keys(path):
    cfg = load_config(path, ["MODEL.META_ARCHITECTURE", "Grattvis"], True, _extend)
    assert cfg.SOLVER.SCHEDULE == "iter" and cfg.INPUT.SAMPLER == "reference_range"
    if "vita_" in path:
        assert cfg.MODEL.VITA.ENC_WINDOW_SIZE == 6 and cfg.SOLVER.BASE_LR == pytest.approx(5e-5)
        assert len(cfg.DATASETS.DATASET_RATIO) == len(cfg.DATASETS.TRAIN) == 2


@pytest.mark.parametrize("which", [w for w in sorted(TABLE) if w[0] != "youtubevis_2022"])
def test_the_readme_spelling_of_a_config_path_is_the_same_config(which):
    readme = load_config("genvis/{}/grattvis_{}_bs8.yaml".format(*which), [], True, _extend)
    assert readme == load_config("grattvis/{}/grattvis_{}_bs8.yaml".format(*which), [], True, _extend)
