"""Every DeVIS config of the seed tables loads under its seed name, with the values of devis.md §1.1 / §3,
and ``KEY VALUE`` overrides work on it."""

import pytest

from vidseg.config import ConfigError
from vidseg.models import load_config

FINAL = {
    # name: (queries, epochs, steps, start_eval, num_out, center_cost, backbone)
    "YT-19/devis_R_50_YT-19.yaml": (60, 9, [3, 7], 3, 20, 0.0, "resnet50"),
    "YT-19/devis_Swin_L_YT-19.yaml": (60, 10, [4, 8], 5, 20, 0.0, "swin_l_p4w12"),
    "YT-21/devis_R_50_YT-21.yaml": (180, 10, [4, 8], 5, 30, 0.0, "resnet50"),
    "YT-21/devis_Swin_L_YT-21.yaml": (180, 9, [4, 8], 5, 30, 0.0, "swin_l_p4w12"),
    "OVIS/devis_R_50_OVIS.yaml": (180, 12, [6, 10], 5, 30, 1.0, "resnet50"),
    "OVIS/devis_Swin_L_OVIS.yaml": (180, 12, [6, 10], 5, 30, 1.0, "swin_l_p4w12"),
}

ABLATIONS = {
    # name: (T, queries, levels, K_temp enabled, instance-aware, 3-d head, MDC, min test size)
    "devis_ablation0_deformable_vistr.yaml": (36, 360, 1, True, False, True, False, 300),
    "devis_ablation1_deformable_vistr_wo_temp_conn.yaml": (36, 360, 1, False, False, True, False, 300),
    "devis_ablation2-5_single-scale_wo_temp_conn.yaml": (6, 60, 1, False, False, True, False, 300),
    "devis_ablation2_single-scale.yaml": (6, 60, 1, True, False, True, False, 300),
    "devis_ablation3_increased-spatial-inputs.yaml": (6, 60, 4, True, False, True, False, 360),
    "devis_ablation4_instance-aware.yaml": (6, 60, 4, True, True, True, False, 360),
    "devis_ablation5_multi-scale_mask-head.yaml": (6, 60, 4, True, True, False, True, 360),
    "devis_ablation6_TEST_multi-cue_tracking.yaml": (6, 60, 4, True, True, False, True, 360),
}


@pytest.mark.parametrize("name", sorted(FINAL))
def test_final_configs(name):
    cfg = load_config(f"configs/devis/{name}")
    queries, epochs, steps, start_eval, num_out, center, backbone = FINAL[name]
    m, s = cfg.MODEL, cfg.SOLVER
    assert m.META_ARCHITECTURE == "DeVIS" and m.BACKBONE == backbone
    assert (m.NUM_QUERIES, m.DEVIS.NUM_FRAMES, cfg.INPUT.NUM_FRAMES, m.NUM_FEATURE_LEVELS) == (
        queries,
        6,
        6,
        4,
    )
    assert m.NUM_CLASSES == (25 if "OVIS" in name else 40)
    assert m.MASK_ON and m.BBX_GRADIENT_PROP and m.LOSS.AUX_LOSS_WEIGHTING and m.MATCHER.CLASS_COST == 1.0
    assert m.WEIGHTS.endswith("_deformable_detr_segmentation.pth")
    assert (s.BASE_LR, s.LR_BACKBONE, s.BATCH_SIZE, s.EPOCHS, list(s.STEPS)) == (1e-4, 1e-5, 1, epochs, steps)
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (360, 640)
    assert (cfg.TEST.START_EVAL_EPOCH, cfg.TEST.NUM_OUT) == (start_eval, num_out)
    tr = cfg.TEST.CLIP_TRACKING
    assert (tr.STRIDE, tr.CLASS_COST, tr.MASK_COST, tr.SCORE_COST, tr.CENTER_COST) == (4, 1, 1, 1, center)
    assert cfg.INPUT.SCALE_FACTOR_TRAIN == (0.9 if name == "OVIS/devis_Swin_L_OVIS.yaml" else 1.0)
    assert (cfg.INPUT.FORMAT, cfg.INPUT.FORMAT_TEST) == ("BGR", "RGB")


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_configs(name):
    cfg = load_config(f"configs/devis/ablations/{name}")
    t, queries, levels, temporal, aware, head3d, mdc, min_test = ABLATIONS[name]
    m = cfg.MODEL
    a = m.DEVIS.DEFORMABLE_ATTENTION
    assert (m.DEVIS.NUM_FRAMES, cfg.INPUT.NUM_FRAMES, m.NUM_QUERIES, m.NUM_FEATURE_LEVELS) == (
        t,
        t,
        queries,
        levels,
    )
    assert (not a.DISABLE_TEMPORAL_CONNECTIONS, a.INSTANCE_AWARE_ATTENTION) == (temporal, aware)
    assert (m.MASK_HEAD.DEVIS.CONV_HEAD_3D, m.MASK_HEAD.USE_MDC) == (head3d, mdc)
    assert cfg.INPUT.MIN_SIZE_TEST == min_test and cfg.TEST.NUM_OUT == 10
    assert not m.LOSS.AUX_LOSS_WEIGHTING
    tr = cfg.TEST.CLIP_TRACKING
    if name.startswith("devis_ablation6"):
        assert m.WEIGHTS == "" and (tr.USE_BINARY_MASK_IOU, tr.CLASS_COST, tr.SCORE_COST) == (False, 1, 1)
    else:
        assert (tr.USE_BINARY_MASK_IOU, tr.USE_FRAME_AVERAGE_IOU, tr.CLASS_COST, tr.SCORE_COST) == (
            True,
            True,
            0,
            0,
        )
    if name.startswith("devis_ablation5"):
        assert list(m.LOSS.MASK_AUX_LOSS) == [2] and m.LOSS.SEGM_MASK_COEF == 4.0 and m.BBX_GRADIENT_PROP
    else:
        assert m.LOSS.SEGM_MASK_COEF == (4.0 if "ablation6" in name else 1.0)


def test_seed_override_commands_work():
    cfg = load_config("configs/devis/YT-19/devis_R_50_YT-19.yaml", ["SOLVER.BASE_LR", "0.0002"])
    assert cfg.SOLVER.BASE_LR == 0.0002
    cfg = load_config(
        "devis/YT-19/devis_R_50_YT-19.yaml",
        [
            "MODEL.DEVIS.DEFORMABLE_ATTENTION.DEC_N_POINTS_TEMPORAL_FRAME",
            "0",
            "TEST.CLIP_TRACKING.STRIDE",
            "2",
        ],
    )
    assert cfg.MODEL.DEVIS.DEFORMABLE_ATTENTION.DEC_N_POINTS_TEMPORAL_FRAME == 0
    assert cfg.TEST.CLIP_TRACKING.STRIDE == 2
    with pytest.raises(ConfigError, match="MODEL.DEVIS.NUM_FRAME"):
        load_config("devis/YT-19/devis_R_50_YT-19.yaml", ["MODEL.DEVIS.NUM_FRAME", "4"])


def test_devis_data_keys_are_implemented_and_coco_joint_training_names_its_datasets(caplog):
    import logging

    import torch

    from vidseg.models.devis.build import build_devis_model

    cfg = load_config("devis/ablations/devis_ablation0_deformable_vistr.yaml")
    with caplog.at_level(logging.WARNING), torch.device("meta"):
        build_devis_model(cfg, 40)
    # Implemented now: VisTR's augmentation and every frame as a clip start (no warning).
    assert "MULTI_SCALE_TRAIN" not in caplog.text and "SAMPLE_EACH_FRAME" not in caplog.text
    from vidseg.data.build import build_augmentation

    aug = build_augmentation(cfg)
    assert aug.vistr and aug.min_sizes == tuple(range(480, 769, 32))
    assert (aug.out_size, aug.out_max_size) == (300, 540)
    assert not build_augmentation(load_config("devis/YT-19/devis_R_50_YT-19.yaml")).vistr
    bad = load_config("devis/YT-19/devis_R_50_YT-19.yaml", ["DATASETS.DEVIS.COCO_JOINT_TRAINING", "True"])
    with pytest.raises(ValueError, match="coco2ytvis2019_train"):
        build_devis_model(bad, 40)
    mismatch = load_config("devis/YT-19/devis_R_50_YT-19.yaml", ["MODEL.DEVIS.NUM_FRAMES", "4"])
    with pytest.raises(ValueError, match="INPUT.NUM_FRAMES 6 != MODEL.DEVIS.NUM_FRAMES 4"):
        build_devis_model(mismatch, 40)
