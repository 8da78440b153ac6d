"""``vidseg quickstart --method DeVIS`` trains the small DeVIS config on the synthetic set."""

import argparse

from vidseg.commands.quickstart import add_arguments, quickstart_config
from vidseg.models import build_model


def test_quickstart_config_for_devis(tmp_path):
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(
        ["--method", "DeVIS", "--clip-frames", "4", "--size", "64x96", "SOLVER.BASE_LR", "0.0003"]
    )
    data = {k: tmp_path / k for k in ("train_json", "train_images", "val_json", "val_images")}
    cfg = quickstart_config(args, data, tmp_path / "run")
    assert cfg.MODEL.META_ARCHITECTURE == "DeVIS"
    assert cfg.MODEL.DEVIS.NUM_FRAMES == cfg.INPUT.NUM_FRAMES == 4 and cfg.MODEL.NUM_QUERIES == 24
    assert cfg.SOLVER.BASE_LR == 0.0003 and cfg.SOLVER.BATCH_SIZE == 1  # overrides apply; one clip per step
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (64, 96)
    cfg.MODEL.NUM_CLASSES = 4
    bundle = build_model(cfg, None)
    assert bundle.model.num_frames == 4 and bundle.model.num_slots == 6
