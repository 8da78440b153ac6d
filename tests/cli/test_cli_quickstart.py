"""``vidseg quickstart`` trains DeVIS by default (ToyVIS on request), evaluates it through the clip tracker
and renders a demo video at least 320 px wide and 3 s long; the full default run beats ToyVIS on every
class."""

from __future__ import annotations

import argparse
import json

import av
import pytest
from cli_helpers import run_cli

from vidseg.commands.quickstart import DEMO_MIN_WIDTH, add_arguments, quickstart_config
from vidseg.models import load_config

TOYVIS_AP = 31.7  # ToyVIS's segm/AP on the default quickstart's valid split (seed 0, 6 videos, 96x160)


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


def _video_size_and_seconds(path) -> tuple[int, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return s.codec_context.width, frames / float(s.average_rate)


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
    width, seconds = _video_size_and_seconds(run / "prediction.mp4")
    assert width >= DEMO_MIN_WIDTH and seconds >= 3.0
    assert (out / "data" / "demo" / "instances.json").is_file()  # the demo video sits with the data


@pytest.mark.slow  # the full default quickstart: about 10 minutes on 2 cores
def test_default_devis_quickstart_beats_toyvis_on_every_class(tmp_path, capsys):
    out = tmp_path / "qs"
    rc, stdout, err = run_cli(capsys, "quickstart", "--out", out, "--no-progress")
    assert rc == 0, err[-3000:]
    evals = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    metrics = evals[-1]
    assert metrics["segm/AP"] > TOYVIS_AP + 10
    per_class = {k: v for k, v in metrics.items() if k.startswith("segm/AP-")}
    assert len(per_class) == 4 and min(per_class.values()) > 0, per_class
    width, seconds = _video_size_and_seconds(out / "run" / "prediction.mp4")
    assert width >= DEMO_MIN_WIDTH and seconds >= 3.0
