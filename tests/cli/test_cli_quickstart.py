"""``vidseg quickstart`` trains DeVIS by default (ToyVIS on request), evaluates it through the clip tracker
and renders a demo video at least 320 px wide and 3 s long; the full default run scores on every class."""

from __future__ import annotations

import argparse
import json

import pytest
from cli_helpers import run_cli, video_width_frames_fps

from vidseg.commands.quickstart import DEMO_MIN_WIDTH, add_arguments, quickstart_config
from vidseg.models import load_config

# segm/AP on the default quickstart's valid split (seed 0, 6 videos of 8 frames, 96x160): devis_tiny trained
# 8 epochs gave 19.0; the default (devis_quickstart.yaml) gave 29.0. ToyVIS gives 31.7-34.2, which the issue
# asks DeVIS to beat clearly: not reached yet (docs/training.md#quickstart).
OLD_DEVIS_AP = 19.0


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def _data(tmp_path) -> dict:
    return {k: tmp_path / k for k in ("train_json", "train_images", "val_json", "val_images")}


def test_the_default_method_is_devis_with_its_config_defaults(tmp_path):
    args = _args()
    assert args.method == "DeVIS" and args.epochs is None and args.clip_frames is None
    cfg = quickstart_config(args, _data(tmp_path), tmp_path / "run")
    own = load_config("quickstart/devis_quickstart.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "DeVIS"
    assert cfg.SOLVER.EPOCHS == own.SOLVER.EPOCHS and tuple(cfg.SOLVER.STEPS) == tuple(own.SOLVER.STEPS)
    assert cfg.INPUT.NUM_FRAMES == cfg.MODEL.DEVIS.NUM_FRAMES == own.MODEL.DEVIS.NUM_FRAMES
    assert cfg.TEST.EVAL_PERIOD == own.SOLVER.EPOCHS  # evaluated once, at the end


def test_short_devis_options_scale_the_schedule_and_the_queries(tmp_path):
    own = load_config("quickstart/devis_quickstart.yaml")
    slots = own.MODEL.NUM_QUERIES // own.MODEL.DEVIS.NUM_FRAMES
    cfg = quickstart_config(_args("--epochs", "2", "--clip-frames", "2"), _data(tmp_path), tmp_path / "r")
    assert cfg.SOLVER.EPOCHS == 2 and cfg.TEST.EVAL_PERIOD == 2
    assert all(1 <= s <= 2 for s in cfg.SOLVER.STEPS)  # the LR drop stays inside the shorter run
    assert cfg.MODEL.DEVIS.NUM_FRAMES == cfg.INPUT.NUM_FRAMES == 2 and cfg.MODEL.NUM_QUERIES == 2 * slots


def test_toyvis_stays_available_with_its_own_defaults(tmp_path):
    cfg = quickstart_config(_args("--method", "ToyVIS"), _data(tmp_path), tmp_path / "run")
    assert cfg.MODEL.META_ARCHITECTURE == "ToyVIS" and cfg.SOLVER.EPOCHS == 8 and cfg.INPUT.NUM_FRAMES == 4



@pytest.mark.e2e
def test_short_devis_quickstart_renders_a_large_long_demo_video(tmp_path, capsys):
    out = tmp_path / "qs"
    rc, stdout, err = run_cli(
        capsys, "quickstart", "--out", out, "--epochs", 1, "--videos", 2, "--val-videos", 1, "--frames", 4,
        "--clip-frames", 2, "--size", "64x96", "--no-progress", "DATALOADER.NUM_WORKERS", 0,
    )  # fmt: skip
    assert rc == 0, err[-3000:]
    assert "training DeVIS" in stdout and "AP by class:" in stdout
    run = out / "run"
    assert json.loads((run / "eval_results" / "epoch_1" / "results.json").read_text()) is not None
    width, frames, fps = video_width_frames_fps(run / "prediction.mp4")
    assert width >= DEMO_MIN_WIDTH and frames >= 3 * fps  # at least 3 s of video
    assert (out / "data" / "demo" / "instances.json").is_file()  # the demo video sits with the data


@pytest.mark.slow  # the full default quickstart: about 11 minutes on 2 cores
def test_default_devis_quickstart_scores_on_every_class(tmp_path, capsys):
    out = tmp_path / "qs"
    rc, stdout, err = run_cli(capsys, "quickstart", "--out", out, "--no-progress")
    assert rc == 0, err[-3000:]
    evals = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    metrics = evals[-1]
    assert metrics["segm/AP"] > OLD_DEVIS_AP + 5
    per_class = {k: v for k, v in metrics.items() if k.startswith("segm/AP-")}
    assert len(per_class) == 4 and min(per_class.values()) > 0, per_class
    width, frames, fps = video_width_frames_fps(out / "run" / "prediction.mp4")
    assert width >= DEMO_MIN_WIDTH and frames >= 3 * fps  # at least 3 s of video
