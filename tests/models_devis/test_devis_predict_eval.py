"""``vidseg eval`` and ``vidseg predict`` / ``VideoPredictor.predict`` on an mp4 run DeVIS through the same
clip tracker: the same frames give the same tracks (scores, categories, masks), over several overlapping
clips. Prediction streams (``ClipInference.stream``); its final tracks are the stream's own final result."""

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
from vidseg.cli import main as vidseg_main
from vidseg.data import generate_synthetic_dataset
from vidseg.data.video_io import write_video
from vidseg.inference import VideoPredictor
from vidseg.inference.sources import open_source
from vidseg.models import load_config
from vidseg.models.devis.build import build_devis

H, W, N = 64, 96, 8  # 8 frames, T=3, STRIDE 2: clips at 0, 2, 4 and a last one at 5 that overlaps more


def _same_frames(tmp: Path) -> tuple[Path, Path, Path]:
    """An mp4 of a synthetic video, and a YT-VIS set whose frames are that mp4's decoded frames."""
    d = generate_synthetic_dataset(
        tmp / "syn", seed=1, num_videos_train=1, num_videos_val=1, num_frames=N, height=H, width=W,
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
        *("DATASETS.CUSTOM_VAL_IMAGES", str(images), "MODEL.NUM_CLASSES", "2", "MODEL.WEIGHTS", str(weights)),
        *("MODEL.BACKBONE_PRETRAINED", "''", "INPUT.MIN_SIZE_TEST", str(H), "INPUT.MAX_SIZE_TEST", str(W)),
        *("TEST.NUM_OUT", "4"),
    ]


@pytest.mark.filterwarnings("ignore")
def test_predict_on_mp4_gives_the_tracks_of_eval(tmp_path):
    mp4, ann, images = _same_frames(tmp_path)
    torch.manual_seed(0)
    cfg0 = load_config(
        "quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "2", "MODEL.BACKBONE_PRETRAINED", "''"]
    )
    weights = tmp_path / "model.pth"
    write_weights(weights, build_devis(cfg0).model.state_dict())
    out = tmp_path / "run"
    opts = _opts(out, ann, images, weights)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [
        sys.executable,
        "-m",
        "vidseg",
        "eval",
        "--config-file",
        "quickstart/devis_tiny.yaml",
        "--no-progress",
    ]
    p = subprocess.run(cmd + opts, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evaluated = json.loads((out / "eval_results" / "results.json").read_text())
    assert (out / "eval_results" / "results.zip").is_file()

    cfg = load_config("quickstart/devis_tiny.yaml", opts)
    predictor = VideoPredictor.from_config(cfg, str(weights), device="cpu")
    assert predictor.streaming  # DeVIS streams clip by clip, not the whole-video fallback
    state = predictor.init_state(mp4, video_id=1)
    result = predictor.predict(state=state, source=mp4, progress=False)
    assert result is state.result and {t.track_id for t in result.tracks} == set(state.tracks)
    assert all(state.tracks[t.track_id].final for t in result.tracks)
    predicted = result.to_official(predictor.category_ids(result))

    # the command line: same config and weights, the mp4 as the source
    pred_out = tmp_path / "pred"
    argv = ["predict", str(mp4), "--config-file", "quickstart/devis_tiny.yaml", "--out", str(pred_out)]
    argv += ["--no-render", "--no-progress", "--video-id", "1", "--device", "cpu", *opts]
    assert vidseg_main(argv) == 0
    from_cli = json.loads((pred_out / "results.json").read_text())

    assert 0 < len(evaluated) <= 4 and len(predicted) == len(evaluated) == len(from_cli)
    assert all(any(s is not None for s in e["segmentations"]) for e in evaluated)
    key = lambda e: -e["score"]  # noqa: E731
    for a, b, c in zip(sorted(evaluated, key=key), sorted(predicted, key=key), sorted(from_cli, key=key)):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6) and c["score"] == b["score"]
        assert a["category_id"] == b["category_id"] == c["category_id"]
        assert len(a["segmentations"]) == len(b["segmentations"]) == N
        assert (
            [s and s["counts"] for s in a["segmentations"]]
            == [s and s["counts"] for s in b["segmentations"]]
            == [s and s["counts"] for s in c["segmentations"]]
        )
