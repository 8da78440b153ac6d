"""``vidseg train`` of the small DeVIS config on the synthetic dataset, stage-2 initialised from a tiny COCO
image model through MODEL.WEIGHTS: a short run always (CI), and a slow run that must learn.

Validation videos have T frames, so each is one clip: the segm AP measures the clip model itself (the clip
tracker only starts its tracks there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidseg.checkpoints import write_weights
from vidseg.data import generate_synthetic_dataset
from vidseg.models import load_config
from vidseg.models.devis.build import build_deformable_detr_segm

SIZE = (64, 96)


def _data(root: Path, train_videos: int, val_videos: int, train_frames: int, max_instances: int = 4) -> dict:
    kw = dict(height=SIZE[0], width=SIZE[1], num_classes=2, max_instances=max_instances, progress=False)
    train = generate_synthetic_dataset(
        root / "a", seed=0, num_videos_train=train_videos, num_videos_val=1, num_frames=train_frames, **kw
    )
    val = generate_synthetic_dataset(
        root / "b", seed=1, num_videos_train=1, num_videos_val=val_videos, num_frames=3, **kw
    )
    return {"train": train, "val": val}


def _coco_weights(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = load_config("quickstart/deformable_mask_head_tiny.yaml", ["MODEL.NUM_CLASSES", "91"])
    write_weights(path, build_deformable_detr_segm(cfg, 91).state_dict())
    return path


def _train(tmp_path: Path, data: dict, *opts: str, flags: tuple = (), timeout: int = 600) -> Path:
    out = tmp_path / "run"
    d_tr, d_val = data["train"], data["val"]
    args = [
        *("train", "--config-file", "quickstart/devis_tiny.yaml", "--no-progress", *flags),
        *("OUTPUT_DIR", out, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"),
        *("DATASETS.TRAIN", '("custom_train",)', "DATASETS.TEST", '("custom_val",)'),
        *(
            "DATASETS.CUSTOM_TRAIN_JSON",
            d_tr["train_json"],
            "DATASETS.CUSTOM_TRAIN_IMAGES",
            d_tr["train_images"],
        ),
        *("DATASETS.CUSTOM_VAL_JSON", d_val["val_json"], "DATASETS.CUSTOM_VAL_IMAGES", d_val["val_images"]),
        *("INPUT.MIN_SIZE_TRAIN", f"({SIZE[0]},)", "INPUT.MAX_SIZE_TRAIN", SIZE[1]),
        *("INPUT.MIN_SIZE_TEST", SIZE[0], "INPUT.MAX_SIZE_TEST", SIZE[1]),
        *opts,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    p = subprocess.run(
        [sys.executable, "-m", "vidseg", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


def _metrics(out: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r and r.get("type") != "eval"], [
        r for r in rows if r.get("type") == "eval"
    ]


def test_short_devis_training_run_through_the_engine(tmp_path):
    data = _data(tmp_path, train_videos=2, val_videos=2, train_frames=4)
    weights = _coco_weights(tmp_path / "coco_maskhead.pth")
    out = _train(
        tmp_path, data, "MODEL.WEIGHTS", weights,
        *("SOLVER.EPOCHS", "1", "SOLVER.STEPS", "(1,)", "VISDOM_AND_LOG_INTERVAL", "1"),
    )  # fmt: skip
    log = (out / "log.txt").read_text()
    # Stage 2 from the COCO mask-head file, said in the log.
    assert "DeVIS stage 2 from a COCO image model" in log and "copied as-is" in log
    assert "temporal projections copied from the spatial ones" in log
    assert "re-initialised: def_detr.query_embed.weight (18, 256)" in log
    train, evals = _metrics(out)
    assert len(train) == 4  # 2 videos x (4 - 3 + 1) clips, one clip per iteration
    assert all(r["loss"] == r["loss"] for r in train)  # finite (not NaN)
    assert "lr_temporal_linear_proj" in train[0]
    assert len(evals) == 1 and "segm/AP" in evals[0]
    res = json.loads((out / "eval_results" / "epoch_1" / "results.json").read_text())
    assert {r["video_id"] for r in res} == {1, 2}
    assert all(len(r["segmentations"]) == 3 for r in res)
    assert len([r for r in res if r["video_id"] == 1]) == 10  # TEST.NUM_OUT trajectories of the one clip


@pytest.mark.slow
def test_devis_learns_on_the_synthetic_dataset(tmp_path):
    # 12 videos of 6 frames (48 clips per epoch), at most 2 objects each; 12 epochs, LR x0.1 after 8.
    data = _data(tmp_path, train_videos=12, val_videos=6, train_frames=6, max_instances=2)
    out = _train(
        tmp_path, data,
        *("SOLVER.EPOCHS", "12", "SOLVER.STEPS", "(8,)", "VISDOM_AND_LOG_INTERVAL", "16"),
        *("TEST.EVAL_PERIOD", "12"),
        timeout=2400,
    )  # fmt: skip
    train, evals = _metrics(out)
    first = sum(r["loss"] for r in train[:3]) / 3
    last = sum(r["loss"] for r in train[-3:]) / 3
    ap, ap50 = evals[-1]["segm/AP"], evals[-1]["segm/AP50"]
    print(f"tiny DeVIS: loss {first:.2f} -> {last:.2f}, segm/AP {ap:.1f}, AP50 {ap50:.1f}")
    # A run with these settings (shared 2-core CPU, 7 min): mean loss 18.4 -> 3.4, AP 17.5 / AP50 51.3.
    assert last < 0.6 * first
    assert ap > 10.0 and ap50 > 30.0


@pytest.mark.slow
def test_two_process_devis_training(tmp_path):
    """``vidseg train --num-gpus 2`` (gloo on CPU): DDP over the video model, the normaliser all-reduced."""
    data = _data(tmp_path, train_videos=2, val_videos=1, train_frames=4)
    out = _train(
        tmp_path, data, "SOLVER.IMS_PER_BATCH", "2",
        *("SOLVER.EPOCHS", "1", "SOLVER.STEPS", "(1,)", "VISDOM_AND_LOG_INTERVAL", "1"),
        flags=("--num-gpus", "2"),
    )  # fmt: skip
    assert "world size 2" in (out / "log.txt").read_text()
    train, evals = _metrics(out)
    assert len(train) == 2 and len(evals) == 1  # 4 clips, 2 per step
