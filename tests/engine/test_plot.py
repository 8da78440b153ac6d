"""Curves as pictures: ``OUTPUT_DIR/curves.png`` from training, ``vidseg plot`` for one run or several side by
side; the grouping of the scalars into plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_standins import StandinData, toy_cfg
from PIL import Image

from vidseg.cli import main
from vidseg.engine.metric_groups import AUX_TRACE, split_eval, split_train
from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.writers import CurvesWriter

BLUE = (31, 119, 180)  # matplotlib's first line colour: the first trace of every panel


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    a, b = root / "run_a", root / "run_b"
    assert run_train(toy_cfg(a), RunOptions(progress=False), data=StandinData()) == 0
    # A second run for the side-by-side picture: the same records, the losses halved (no second training).
    b.mkdir()
    recs = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    halved = [{k: v / 2 if k.startswith("loss") else v for k, v in r.items()} for r in recs]
    (b / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in halved))
    return a, b


def _blue(img: np.ndarray) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - BLUE) < 10, axis=-1)


def _cells(img: np.ndarray, rows: int, cols: int):
    h, w = img.shape[0] // rows, img.shape[1] // cols
    return [[img[r * h : (r + 1) * h, c * w : (c + 1) * w] for c in range(cols)] for r in range(rows)]


def test_training_writes_curves_png(runs):
    img = np.asarray(Image.open(runs[0] / "curves.png").convert("RGB"))
    assert img.shape == (800, 1200, 3)
    for row in _cells(img, 2, 2):  # loss, learning rate / evaluation, time: a line in each panel
        for cell in row:
            assert _blue(cell).sum() > 200


def test_vidseg_plot_one_run(runs, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert main(["plot", str(runs[0]), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (800, 1200, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # text, lines, grid: not a blank canvas
    assert (img.min(axis=-1) < 100).mean() > 0.01  # dark ink: labels and axes
    for row in _cells(img, 2, 2):
        for cell in row:
            assert _blue(cell).sum() > 200


def test_vidseg_plot_runs_side_by_side(runs, tmp_path):
    out = tmp_path / "two.png"
    assert main(["plot", str(runs[0]), str(runs[1] / "metrics.jsonl"), "--out", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (1280, 920, 3)  # 4 panels high, one column per run
    for row in _cells(img, 4, 2):
        for cell in row:
            assert _blue(cell).sum() > 100


def test_vidseg_plot_without_metrics_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.jsonl" in err[0] and str(tmp_path) in err[0]


def test_curves_writer_draws_at_each_evaluation_and_at_the_end(tmp_path):
    path = tmp_path / "curves.png"
    w = CurvesWriter(path, "r")
    w.write_train(1, {"loss": 2.0, "loss_ce": 1.0, "lr_base": 1e-3})
    assert not path.exists()
    w.write_eval(1, {"segm/AP": 10.0}, step=1)
    first = path.read_bytes()
    w.write_train(2, {"loss": 1.0, "loss_ce": 0.5, "lr_base": 1e-3})
    w.close()
    assert path.read_bytes() != first  # redrawn with iteration 2


def test_groups_keep_units_apart():
    rec = {
        "type": "train",
        "iter": 7,
        "loss": 9.0,
        "loss_ce": 2.0,
        "loss_ce_0": 1.0,
        "loss_ce_1": 1.5,
        "loss_ce_unscaled": 1.0,
        "loss_ce_0_unscaled": 0.5,
        "lr_base": 1e-4,
        "lr_backbone": 1e-5,
        "iter_time": 0.3,
        "data_time": 0.01,
        "grad_norm": 4.0,
        "memory_mb": 455.0,
    }
    g = split_train(rec)
    assert g["loss"] == {"total": 9.0, "ce": 2.0, AUX_TRACE: 2.5}
    assert g["loss_unweighted"] == {"ce": 1.0}
    assert g["lr"] == {"base": 1e-4, "backbone": 1e-5}
    assert g["time"] == {"iter_time": 0.3, "data_time": 0.01}
    assert g["memory"] == {"peak memory": 455.0}
    assert "iter" not in str(g.get("other", {}))
    rec = {"type": "eval", "iter": 3, "segm/AP": 1.0, "segm/AR10": 2.0, "segm/APs": 3.0, "segm/AP-star": 4.0}
    assert split_eval(rec) == {
        "eval": {"segm/AP": 1.0},
        "eval_ar": {"segm/AR10": 2.0},
        "eval_detail": {"segm/APs": 3.0, "segm/AP-star": 4.0},
    }
