"""A run folder stands on its own: its config.yaml works from any folder, and prediction needs the class
names it stores, not the annotation file. Re-running the quickstart keeps the earlier run."""

from __future__ import annotations

import shutil

import pytest
from cli_helpers import make_data, run_cli, write_config

from vidseg.data.synthetic import SHAPES


def test_saved_config_predicts_from_another_folder_without_the_annotations(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = make_data(work / "data")
    cfg = write_config(work / "cfg.yaml", data, work / "run")
    # relative OUTPUT_DIR, flags after the KEY VALUE pairs, as a user types them
    rc, _, err = run_cli(capsys, "train", "--config-file", cfg, "OUTPUT_DIR", "run", "--no-progress")
    assert rc == 0, err[-3000:]
    frames = tmp_path / "clip"
    shutil.copytree(sorted((work / "data" / "valid" / "JPEGImages").iterdir())[0], frames)
    shutil.rmtree(work / "data")  # the annotation files are gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, err = run_cli(
        capsys, "predict", frames, "--config-file", work / "run" / "config.yaml", "--weights",
        work / "run" / "checkpoint.pth", "--out", "pred", "--score-threshold", "0", "--no-progress",
    )  # fmt: skip
    assert rc == 0, err[-3000:]
    assert "warning" not in err  # no "no dataset metadata" fallback
    listed = [ln.split()[1] for ln in out.splitlines()[2:] if ln.startswith("  ") and ln.split()[0].isdigit()]
    assert listed and set(listed) <= set(SHAPES[:4])  # tracks named by class, not "class <label>"
    assert (elsewhere / "pred" / "results.json").is_file()


@pytest.mark.e2e
def test_quickstart_again_keeps_the_earlier_run(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ("quickstart", "--method", "ToyVIS", "--out", out, "--epochs", 1, "--videos", 4, "--val-videos", 2)
    args += ("--frames", 4)
    args += ("--size", "64x96", "--no-progress", "DATALOADER.NUM_WORKERS", 0)
    assert run_cli(capsys, *args)[0] == 0
    first = {p.name: p.read_bytes() for p in (out / "run").iterdir() if p.is_file()}
    assert {"checkpoint.pth", "checkpoint_best.pth", "metrics.jsonl", "prediction.mp4"} <= set(first)

    rc, stdout, _ = run_cli(capsys, *args, "--epochs", 2)
    assert rc == 0
    assert f"{out / 'run'} holds an earlier run, kept: this run goes to {out / 'run-2'}" in stdout
    assert "(reused)" in stdout  # same data settings: the same data folder
    assert {p.name: p.read_bytes() for p in (out / "run").iterdir() if p.is_file()} == first
    assert (out / "run-2" / "checkpoint.pth").is_file() and (out / "run-2" / "prediction.mp4").is_file()

    rc, stdout, _ = run_cli(capsys, *args, "--videos", 3, "--no-render")  # other data: another data folder
    assert rc == 0 and (out / "run-3").is_dir() and (out / "data-2" / "train" / "instances.json").is_file()
    assert "--overwrite" in stdout
