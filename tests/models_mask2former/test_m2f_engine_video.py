"""Per-frame training on a video dataset through the engine (every frame of a clip is one image), then the
YouTube-VIS evaluation of the detector's one-frame tracks."""

from __future__ import annotations

import json
import math

from vidseg.data.synthetic import generate_synthetic_dataset
from vidseg.engine.run import RunOptions, run_train
from vidseg.models import load_config


def test_per_frame_training_on_videos_and_vis_evaluation_through_the_engine(tmp_path):
    paths = generate_synthetic_dataset(
        tmp_path / "synth", num_videos_train=3, num_videos_val=2, num_frames=3, height=64, width=96,
        num_classes=3, max_instances=2, progress=False,
    )  # fmt: skip
    out = tmp_path / "run"
    cfg = load_config(
        "quickstart/mask2former_tiny.yaml",
        [
            *("DATASETS.TRAIN", "('custom_train',)", "DATASETS.TEST", "('custom_val',)"),
            *("DATASETS.CUSTOM_TRAIN_JSON", str(paths["train_json"]), "DATASETS.CUSTOM_TRAIN_IMAGES"),
            *(str(paths["train_images"]), "DATASETS.CUSTOM_VAL_JSON", str(paths["val_json"])),
            *("DATASETS.CUSTOM_VAL_IMAGES", str(paths["val_images"]), "OUTPUT_DIR", str(out)),
            *("MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "VISDOM_ON", "False"),
            *("INPUT.NUM_FRAMES", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"),
            *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "SOLVER.SCHEDULE", "epoch"),
            *(
                "SOLVER.EPOCHS",
                "1",
                "SOLVER.STEPS",
                "(1,)",
                "SOLVER.BATCH_SIZE",
                "2",
                "TEST.EVAL_PERIOD",
                "1",
            ),
            *(
                "SOLVER.CHECKPOINT_PERIOD",
                "0",
            ),
        ],
    )
    assert run_train(cfg, RunOptions(progress=False)) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss_mask" in r]
    assert train and all(math.isfinite(r["loss_mask"]) for r in train)
    evals = [r for r in records if "segm/AP" in r]
    assert len(evals) == 1 and not math.isnan(evals[0]["segm/AP"])
