"""``vidseg eval`` and ``VideoPredictor.predict`` on an mp4 run GRAtt-VIS through the same online inference:
the same frames give the same tracks (scores, categories, masks on every frame). The predictor streams
(``GRAttVISInference.stream``), eval calls the inference whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.checkpoints import write_weights
from vidseg.data import generate_synthetic_dataset
from vidseg.data.video_io import write_video
from vidseg.inference import VideoPredictor
from vidseg.inference.sources import open_source
from vidseg.models import build_model, load_config

H, W, N = 64, 96, 6
CONFIG = "quickstart/grattvis_tiny.yaml"


def _same_frames(tmp: Path) -> tuple[Path, Path, Path]:
    """An mp4 of a synthetic video, and a YT-VIS set whose frames are that mp4's decoded frames."""
    d = generate_synthetic_dataset(
        tmp / "syn", seed=2, num_videos_train=1, num_videos_val=1, num_frames=N, height=H, width=W,
        num_classes=2, max_instances=3, progress=False,
    )  # fmt: skip
    gt = json.loads(Path(d["val_json"]).read_text())
    video = gt["videos"][0]
    frames = [np.asarray(Image.open(Path(d["val_images"]) / f).convert("RGB")) for f in video["file_names"]]
    mp4 = write_video(tmp / "clip.mp4", frames, fps=5)
    decoded = open_source(mp4)
    images = tmp / "images"
    (images / "v").mkdir(parents=True)
    names = []
    for t in range(len(decoded)):
        Image.fromarray(np.asarray(decoded[t])).save(images / "v" / f"{t:05d}.png")
        names.append(f"v/{t:05d}.png")
    assert len(names) == N
    video["file_names"] = names
    ann = tmp / "val.json"
    ann.write_text(json.dumps(gt))
    return mp4, ann, images


def _opts(out: Path, ann: Path, images: Path, weights: Path) -> list[str]:
    return [
        *("OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"),
        *("DATASETS.TEST", '("custom_val",)', "DATASETS.CUSTOM_VAL_JSON", str(ann)),
        *("DATASETS.CUSTOM_VAL_IMAGES", str(images), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"),
        *("MODEL.WEIGHTS", str(weights), "INPUT.MIN_SIZE_TEST", str(H), "INPUT.MAX_SIZE_TEST", str(W)),
        *("TEST.DETECTIONS_PER_IMAGE", "5"),
    ]


@pytest.mark.filterwarnings("ignore")
def test_predict_on_mp4_gives_the_tracks_of_eval(tmp_path):
    mp4, ann, images = _same_frames(tmp_path)
    torch.manual_seed(0)
    cfg0 = load_config(CONFIG, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"])
    weights = tmp_path / "model.pth"
    write_weights(weights, build_model(cfg0).model.state_dict())
    out = tmp_path / "run"
    opts = _opts(out, ann, images, weights)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "vidseg", "eval", "--config-file", CONFIG, "--no-progress"]
    p = subprocess.run(cmd + opts, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evaluated = json.loads((out / "eval_results" / "results.json").read_text())

    cfg = load_config(CONFIG, opts)
    predictor = VideoPredictor.from_config(cfg, str(weights), device="cpu")
    assert predictor.streaming
    result = predictor.predict(mp4, video_id=1, progress=False)
    predicted = result.to_official(predictor.category_ids(result))

    assert len(predicted) == len(evaluated) == 5
    assert all(e["score"] > 0 for e in evaluated)  # random weights, but real masks: nothing trivially equal
    key = lambda e: (-e["score"], e["category_id"])  # noqa: E731
    for a, b in zip(sorted(evaluated, key=key), sorted(predicted, key=key)):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert a["category_id"] == b["category_id"]
        assert len(a["segmentations"]) == len(b["segmentations"]) == N
        assert [s and s["counts"] for s in a["segmentations"]] == [
            s and s["counts"] for s in b["segmentations"]
        ]
