"""A run's training checkpoint, converted to ``.safetensors``, is what ``MODEL.WEIGHTS`` (``vidseg eval``) and
``vidseg predict --weights`` read directly: the same results as from the torch file. The training checkpoint
itself stays a torch file (it holds optimizer and RNG state)."""

from __future__ import annotations

import json
import zipfile

import pytest
from cli_helpers import make_data, run_cli, write_config

from vidseg.checkpoints import safe_read


@pytest.mark.slow  # ~4 s quiet: train, convert, eval twice, predict
def test_eval_and_predict_read_the_converted_safetensors(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    cfg = write_config(tmp_path / "cfg.yaml", data, tmp_path / "run", "TEST.EVAL_PERIOD", "0")
    rc, _, err = run_cli(capsys, "train", "--config-file", cfg, "--no-progress")
    assert rc == 0, err[-3000:]
    run = tmp_path / "run"
    assert zipfile.is_zipfile(run / "checkpoint.pth")  # the training checkpoint: a torch file
    weights = tmp_path / "model.safetensors"
    rc, out, err = run_cli(
        capsys, "convert", run / "checkpoint.pth", weights, "--config-file", run / "config.yaml"
    )
    assert rc == 0, err[-3000:]
    assert "nothing left out" in out and "optimizer" in out  # not weights, not written
    meta = safe_read(weights)
    assert meta["config"]["MODEL"]["META_ARCHITECTURE"] == "ToyVIS" and "optimizer" not in meta

    results = {}
    for name, w in (("pth", run / "checkpoint.pth"), ("safetensors", weights)):
        out_dir = tmp_path / f"eval_{name}"
        rc, _, err = run_cli(
            capsys, "eval", "--config-file", run / "config.yaml", "MODEL.WEIGHTS", w, "OUTPUT_DIR", out_dir,
            "--no-progress",
        )  # fmt: skip
        assert rc == 0, err[-3000:]
        results[name] = json.loads((out_dir / "eval_results" / "results.json").read_text())
    assert results["safetensors"] == results["pth"] and results["pth"]

    frames = sorted((data["val_images"]).iterdir())[0]
    rc, _, err = run_cli(
        capsys, "predict", frames, "--config-file", run / "config.yaml", "--weights", weights,
        "--out", tmp_path / "pred", "--no-render", "--no-progress",
    )  # fmt: skip
    assert rc == 0, err[-3000:]
    assert json.loads((tmp_path / "pred" / "results.json").read_text())  # tracks, from the safetensors file
