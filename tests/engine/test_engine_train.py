"""In-process training runs of the toy model on stand-in data: outputs, evaluation, resume policy, errors."""

import json
import logging

import pytest
import torch
from engine_standins import DumpHook, StandinData, toy_cfg

from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.run_setup import RunDirError
from vidseg.engine.trainer import HookBase
from vidseg.engine.training_state import load_training_state


def _run(cfg, *hooks, **kw):
    return run_train(cfg, RunOptions(progress=False, extra_hooks=hooks, **kw), data=StandinData())


def _jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_epoch_run_writes_everything_and_evaluates(tmp_path):
    assert _run(toy_cfg(tmp_path, "SOLVER.CHECKPOINT_PERIOD", 2)) == 0
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "checkpoint.pth", "checkpoint_epoch_2.pth"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "checkpoint_epoch_1.pth").exists()  # period 2
    assert (tmp_path / "checkpoint_best.pth").is_file()
    for e in (1, 2):
        res = json.loads((tmp_path / "eval_results" / f"epoch_{e}" / "results.json").read_text())
        assert res and {"video_id", "score", "category_id", "segmentations"} <= set(res[0])
        assert {r["video_id"] for r in res} == {1, 2, 3}
        assert (tmp_path / "eval_results" / f"epoch_{e}" / "results.zip").is_file()
    recs = _jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in recs if r["type"] == "train"]
    assert [r["iter"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss_ce", "loss_ce_unscaled", "loss_mask_0", "lr_base", "iter_time", "memory_mb"} <= set(
        train[0]
    )
    assert train[0]["lr_base"] == pytest.approx(1e-3) and train[-1]["lr_base"] == pytest.approx(
        1e-4
    )  # STEPS (1,)
    evals = [r for r in recs if r["type"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and all("segm/AP" in r for r in evals)
    ck = load_training_state(tmp_path / "checkpoint.pth")
    assert set(ck) >= {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "iter",
        "rng",
        "sampler",
        "config",
    }
    assert (ck["epoch"], ck["iter"], ck["sampler"]["index"]) == (3, 6, 0)
    assert ck["config"]["SOLVER"]["CHECKPOINT_PERIOD"] == 2
    assert ck["best"]["metric"] == "segm/AP"
    assert ck["best"]["value"] == max(r["segm/AP"] for r in evals)
    assert "training done" in (tmp_path / "log.txt").read_text()


def test_eval_period_zero_disables_evaluation(tmp_path):
    assert _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0)) == 0
    assert not (tmp_path / "eval_results").exists()
    assert (tmp_path / "checkpoint.pth").is_file() and not (tmp_path / "checkpoint_best.pth").exists()


def test_iteration_schedule_with_warmup_and_start_eval(tmp_path):
    cfg = toy_cfg(
        tmp_path,
        *("SOLVER.SCHEDULE", "iter", "SOLVER.MAX_ITER", 5, "SOLVER.STEPS", "(4,)", "SOLVER.WARMUP_ITERS", 2),
        *("SOLVER.WARMUP_FACTOR", 0.5, "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 2),
    )
    assert _run(cfg) == 0
    lrs = [r["lr_base"] for r in _jsonl(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    # logged after each step: warmup 0.5 -> 0.75 -> 1 ... and x0.1 from iteration 4 on
    assert lrs == pytest.approx([7.5e-4, 1e-3, 1e-3, 1e-4, 1e-4])
    assert sorted(p.name for p in tmp_path.glob("checkpoint_iter_*.pth")) == [
        "checkpoint_iter_2.pth",
        "checkpoint_iter_4.pth",
    ]
    assert sorted(p.name for p in (tmp_path / "eval_results").iterdir()) == ["iter_2", "iter_4", "iter_5"]
    ck = load_training_state(tmp_path / "checkpoint.pth")
    assert ck["iter"] == 5 and ck["sampler"] == {"epoch": 2, "index": 2, "seed": 42}


class _PoisonHook(HookBase):
    """Makes the class logits NaN before step 4 (after epoch 1's checkpoint)."""

    def before_step(self) -> None:
        if self.trainer.iter == 3:
            with torch.no_grad():
                self.trainer.model.class_embed.bias.fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="vidseg"):
        rc = _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0), _PoisonHook())
    assert rc == 1
    log = (tmp_path / "log.txt").read_text()
    assert "non-finite loss at iteration 4" in log and "loss_ce=nan" in log
    ck = load_training_state(tmp_path / "checkpoint.pth")
    assert ck["iter"] == 3 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_auto_resume_refuses_another_config_and_overwrite_restarts(tmp_path):
    assert _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 1)) == 0
    with pytest.raises(RunDirError, match="SOLVER.BASE_LR"):
        _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 1, "SOLVER.BASE_LR", 0.01))
    # same config: resumes automatically and, being finished, runs no further step
    assert _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 1), DumpHook(str(tmp_path))) == 0
    assert torch.load(tmp_path / "rank0.pt")["iter"] == 3
    # --resume with a longer schedule continues from iteration 3
    assert _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 2), resume=True) == 0
    assert load_training_state(tmp_path / "checkpoint.pth")["iter"] == 6
    iters = [r["iter"] for r in _jsonl(tmp_path / "metrics.jsonl")]
    assert iters == [1, 2, 3, 4, 5, 6]
    assert _run(toy_cfg(tmp_path, "TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 1), overwrite=True) == 0
    assert load_training_state(tmp_path / "checkpoint.pth")["iter"] == 3


def test_tensorboard_writer(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert _run(toy_cfg(tmp_path, "TENSORBOARD_ON", True, "SOLVER.EPOCHS", 1)) == 0
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "loss/total" in tags and "eval/segm/AP" in tags
    logged = [r["loss"] for r in _jsonl(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert [e.value for e in acc.Scalars("loss/total")] == pytest.approx(logged, rel=1e-6)
