"""End to end through the CLI: a tiny quickstart (synthetic data -> train -> eval -> render), then
``vidseg eval`` of its checkpoint, and the CLI's error path."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vidseg.data.synthetic")


def _vidseg(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run(
        [sys.executable, "-m", "vidseg", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.e2e
def test_quickstart_then_eval_only(tmp_path):
    out = tmp_path / "qs"
    p = _vidseg(
        *("quickstart", "--method", "ToyVIS", "--out", out, "--epochs", 1, "--videos", 4, "--val-videos", 2),
        *("--frames", 6, "--clip-frames", 3, "--size", "64x96"),
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "prediction:" in p.stdout and "segm/AP" in p.stdout
    assert f"curves:      {out / 'run' / 'curves.png'}" in p.stdout  # where the picture is
    assert "train:" in p.stderr  # the progress bar
    run = out / "run"
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "checkpoint.pth", "curves.png"):
        assert (run / name).is_file(), name
    res = json.loads((run / "eval_results" / "epoch_1" / "results.json").read_text())
    assert {r["video_id"] for r in res} == {1, 2}
    assert (run / "eval_results" / "epoch_1" / "results.zip").is_file()
    assert (run / "prediction.mp4").stat().st_size > 1000
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert len(evals) == 1 and "segm/AP" in evals[0]

    p = _vidseg(
        *("eval", "--config-file", run / "config.yaml", "--no-progress"),
        *("MODEL.WEIGHTS", run / "checkpoint.pth", "OUTPUT_DIR", tmp_path / "ev"),
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    metrics = json.loads((tmp_path / "ev" / "eval_results" / "metrics.json").read_text())
    # same weights, same videos: eval-only reproduces the end-of-training evaluation
    assert metrics["segm/AP"] == pytest.approx(evals[0]["segm/AP"])
    assert (tmp_path / "ev" / "eval_results" / "results.zip").is_file()


def test_cli_reports_config_errors_in_one_line(tmp_path):
    p = _vidseg(
        "train", "MODEL.META_ARCHITECTURE", "ToyVIS", "SOLVER.BASE_LRR", "0.1", "OUTPUT_DIR", tmp_path
    )
    assert p.returncode == 2
    assert "SOLVER.BASE_LRR" in p.stderr and "SOLVER.BASE_LR" in p.stderr and "Traceback" not in p.stderr
    h = _vidseg("quickstart", "--help")
    assert h.returncode == 0 and "shorter or longer" in h.stdout and "--epochs" in h.stdout


@pytest.mark.slow
def test_torchrun_two_processes_through_the_cli(tmp_path):
    """``torchrun --nproc_per_node=2 -m vidseg train`` on the quickstart's data and config (gloo on CPU)."""
    out = tmp_path / "qs"
    p = _vidseg(
        *("quickstart", "--method", "ToyVIS", "--out", out, "--epochs", 1, "--videos", 4, "--val-videos", 2),
        "--no-render",
        *("--frames", 6, "--clip-frames", 3, "--size", "64x96"),
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run2 = tmp_path / "ddp"
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "vidseg", "train", "--config-file", str(out / "run" / "config.yaml"), "--no-progress"]
        + ["OUTPUT_DIR", str(run2), "SOLVER.EPOCHS", "1", "SOLVER.IMS_PER_BATCH", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "world size 2" in (run2 / "log.txt").read_text()
    assert (run2 / "eval_results" / "epoch_1" / "results.json").is_file()
