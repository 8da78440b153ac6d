"""``vidseg quickstart --method grattvis`` trains the detector, then the GRAtt head on it (frozen), evaluates
the head online and renders the demo video; the full default run reaches a clearly non-trivial AP.

No timing here (a loaded CI machine is slow).
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from cli_helpers import run_cli, video_width_frames_fps

from vidseg.checkpoints.safe_load import safe_read
from vidseg.commands.quickstart import DEMO_MIN_WIDTH, add_arguments
from vidseg.commands.quickstart_grattvis import DETECTOR_ITERS, HEAD_ITERS, grattvis_configs


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def _data(tmp_path) -> dict:
    return {k: tmp_path / k for k in ("train_json", "train_images", "val_json", "val_images")}


@pytest.mark.parametrize("spelling", ["GRAttVIS", "grattvis", "GrAttVis"])
def test_the_method_name_is_case_insensitive(spelling):
    assert _args("--method", spelling).method == "GRAttVIS"


def test_default_stages_follow_the_tested_recipe_and_chain_the_detector(tmp_path):
    run = tmp_path / "run"
    det, head = grattvis_configs(_args("--method", "grattvis"), _data(tmp_path), run)
    assert det.MODEL.META_ARCHITECTURE == "Mask2Former" and head.MODEL.META_ARCHITECTURE == "GRAttVIS"
    assert det.OUTPUT_DIR == str(run / "detector") and head.OUTPUT_DIR == str(run)
    assert head.MODEL.WEIGHTS == str(run / "detector" / "checkpoint.pth") and head.MODEL.VITA.FREEZE_DETECTOR
    assert (det.SOLVER.MAX_ITER, head.SOLVER.MAX_ITER) == (DETECTOR_ITERS, HEAD_ITERS)
    assert det.INPUT.NUM_FRAMES == 1 and head.INPUT.NUM_FRAMES == 3
    assert det.TEST.EVAL_PERIOD == 0 and head.TEST.EVAL_PERIOD == HEAD_ITERS  # the head, once, at its end


def test_epochs_clip_frames_and_overrides_map_onto_the_stages(tmp_path):
    args = _args(
        *("--epochs", "2", "--clip-frames", "2"), *("SOLVER.BASE_LR", "0.001", "DATALOADER.NUM_WORKERS", "0")
    )
    det, head = grattvis_configs(args, _data(tmp_path), tmp_path / "run")
    for cfg in (det, head):
        assert cfg.SOLVER.SCHEDULE == "epoch" and cfg.SOLVER.EPOCHS == 2 and cfg.DATALOADER.NUM_WORKERS == 0
    assert head.INPUT.NUM_FRAMES == 2 and det.INPUT.NUM_FRAMES == 1 and head.TEST.EVAL_PERIOD == 2
    assert head.SOLVER.BASE_LR == 0.001 and det.SOLVER.BASE_LR != 0.001  # model settings: the head only



@pytest.mark.e2e
def test_short_grattvis_quickstart_runs_both_stages_and_renders(tmp_path, capsys):
    out = tmp_path / "qs"
    rc, stdout, err = run_cli(
        capsys, "quickstart", "--method", "grattvis", "--out", out, "--epochs", 1, "--videos", 2,
        "--val-videos", 1, "--frames", 3, "--size", "64x96", "--no-progress", "DATALOADER.NUM_WORKERS", 0,
    )  # fmt: skip
    assert rc == 0, err[-3000:]
    assert "stage 1: the detector" in stdout and "stage 2: the GRAtt head" in stdout
    run = out / "run"
    detector = safe_read(run / "detector" / "checkpoint.pth")["model"]
    final = safe_read(run / "checkpoint.pth")["model"]
    assert any(k.startswith("vita_module.") for k in final)
    assert all(torch.equal(final[k], v) for k, v in detector.items())  # stage 2 loaded stage 1, frozen
    assert isinstance(json.loads((run / "eval_results" / "epoch_1" / "results.json").read_text()), list)
    width, frames, fps = video_width_frames_fps(run / "prediction.mp4")
    assert width >= DEMO_MIN_WIDTH and frames >= 3 * fps  # at least 3 s of video


@pytest.mark.slow  # the full default run: 8-12 minutes on 2 cores
@pytest.mark.timeout(1800)  # past the suite's 600 s on a loaded machine
def test_default_grattvis_quickstart_reaches_a_clearly_non_trivial_ap(tmp_path, capsys):
    out = tmp_path / "qs"
    rc, stdout, err = run_cli(capsys, "quickstart", "--method", "GRAttVIS", "--out", out, "--no-progress")
    assert rc == 0, err[-3000:]
    rows = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    metrics = [r for r in rows if r.get("type") == "eval"][-1]
    per_class = {k: v for k, v in metrics.items() if k.startswith("segm/AP-") and v == v}
    print(f"GRAtt-VIS quickstart: segm/AP {metrics['segm/AP']:.1f}, by class {per_class}")
    # Measured (seed 0, shared 2-core CPU, 11 min 29 s): segm/AP 36.9, AP50 63.4; ellipse 40.2, rectangle
    # 35.0, triangle 2.4, star 70.0 (triangles are the hard class of the tiny detector).
    assert metrics["segm/AP"] > 30.0
    assert per_class and all(v > 0 for v in per_class.values()), per_class
