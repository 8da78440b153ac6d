"""Nothing a run has done is lost: a checkpoint when the loop fails (resumed bit for bit), mid-epoch saves
under epoch schedules, no stale temporaries, file modes that follow the umask, a config.yaml that works from
any folder and names the classes."""

import os
import stat
from types import SimpleNamespace

import pytest
import torch
import yaml
from engine_standins import DumpHook, ShapesClips, StandinData, collate, toy_cfg

from vidseg.data.errors import DatasetError
from vidseg.engine.hooks import CheckpointHook
from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.training_state import load_training_state

EPOCHS = ("TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 3, "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", 0)


class MissingFrameClips(ShapesClips):
    """Item 3 of epoch 2 cannot be read (a frame deleted during training), as the real reader reports it."""

    def __getitem__(self, i: int) -> dict:
        if self.epoch == 2 and i == 3:
            raise DatasetError("video 4 (train_0003): frame file not found: 00005.jpg")
        return super().__getitem__(i)


class FailingData(StandinData):
    def train(self, cfg):
        return MissingFrameClips(self.size, self.frames, self.hw, seed=cfg.SEED), collate


def _run(cfg, data=None, *hooks, **kw):
    return run_train(cfg, RunOptions(progress=False, extra_hooks=hooks, **kw), data=data or StandinData())


def _params(out) -> dict:
    return torch.load(out / "rank0.pt")


def test_error_in_the_loop_saves_a_checkpoint_that_resumes_bit_for_bit(tmp_path):
    ref = tmp_path / "ref"
    assert _run(toy_cfg(ref, *EPOCHS), None, DumpHook(str(ref))) == 0

    out = tmp_path / "failed"
    with pytest.raises(DatasetError, match="frame file not found"):
        _run(toy_cfg(out, *EPOCHS), FailingData())
    ck = load_training_state(out / "checkpoint.pth")
    # The sampler's order in epoch 2 decides at which batch item 3 comes; every step before it is kept.
    assert ck["epoch"] == 2 and ck["iter"] == 3 + ck["sampler"]["index"]
    assert "training failed after iteration" in (out / "log.txt").read_text()

    assert _run(toy_cfg(out, *EPOCHS), None, DumpHook(str(out)), resume=True) == 0
    a, b = _params(ref), _params(out)
    assert a["iter"] == b["iter"] == 9
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k


def test_checkpoint_iters_saves_mid_epoch_under_an_epoch_schedule(tmp_path):
    opts = (*EPOCHS, "SOLVER.EPOCHS", 2, "SOLVER.CHECKPOINT_ITERS", 2)
    assert _run(toy_cfg(tmp_path, *opts)) == 0
    log = (tmp_path / "log.txt").read_text().splitlines()
    saves = [ln.split("saved ")[1] for ln in log if "saved " in ln]
    # 3 batches per epoch: iterations 2 and 4 are mid-epoch, 3 and 6 end an epoch (saved anyway; the epoch
    # of a checkpoint is the one to run next).
    assert saves == [
        "checkpoint.pth (epoch 1, iter 2)",
        "checkpoint.pth (epoch 2, iter 3)",
        "checkpoint.pth (epoch 2, iter 4)",
        "checkpoint.pth (epoch 3, iter 6)",
    ]


class _FakeTrainer:
    schedule, batches_per_epoch, epoch = "epoch", 100, 1

    def __init__(self) -> None:
        self.iter, self.inner, self.saved = 0, 0, []

    def state_dict(self, rng_state=None) -> dict:
        self.saved.append(self.iter)
        return {"iter": self.iter}


def test_checkpoint_minutes_uses_the_clock_not_the_step_count(tmp_path):
    now = [0.0]
    hook = CheckpointHook(str(tmp_path), 0, {}, every_minutes=2.0, clock=lambda: now[0])
    hook.trainer = t = _FakeTrainer()
    hook.before_train()
    for step_seconds in (30, 30, 30, 30, 30, 200, 1, 1):  # saves once 120 s passed since the last save
        now[0] += step_seconds
        t.iter += 1
        t.inner += 1
        hook.after_step()
    assert t.saved == [4, 6]
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["iter"] == 6


def test_stale_temporaries_are_removed_and_checkpoints_follow_the_umask(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / ".checkpoint.pth.k3j4h5.tmp"
    stale.write_bytes(b"\0" * 4096)  # what a kill during a write leaves
    other = tmp_path / ".notes.txt.tmp"  # not a checkpoint temporary: not ours to delete
    other.write_text("keep")
    old = os.umask(0o002)
    try:
        assert _run(toy_cfg(tmp_path, *EPOCHS[:2], "SOLVER.EPOCHS", 1)) == 0
    finally:
        os.umask(old)
    assert not stale.exists() and other.exists()
    log = (tmp_path / "log.txt").read_text()
    assert "removed 1 temporary files left by an interrupted checkpoint write" in log
    for name in ("checkpoint.pth", "config.yaml", "log.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o664, name


class _NamedData(StandinData):
    def metadata(self, cfg, name):
        return SimpleNamespace(
            num_classes=2, classes=["square", "disc"], label_to_category_id=[5, 9], has_annotations=True
        )


def test_saved_config_has_absolute_paths_and_the_class_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts = (*EPOCHS[:2], "SOLVER.EPOCHS", 1, "DATASETS.CUSTOM_VAL_JSON", "data/valid.json")
    assert _run(toy_cfg("runs/a", *opts), _NamedData()) == 0
    saved = yaml.safe_load((tmp_path / "runs/a/config.yaml").read_text())
    assert saved["OUTPUT_DIR"] == str(tmp_path / "runs/a")
    assert saved["DATASETS"]["CUSTOM_VAL_JSON"] == str(tmp_path / "data/valid.json")
    assert saved["DATASETS"]["ROOT"] == str(tmp_path / "datasets")  # what the empty root stood for
    assert saved["MODEL"]["CLASS_NAMES"] == ["square", "disc"] and saved["MODEL"]["CATEGORY_IDS"] == [5, 9]
    # The same relative command again: the same run (absolute and relative paths compare equal), resumed.
    assert _run(toy_cfg("runs/a", *opts), _NamedData()) == 0
    assert "resumed from" in (tmp_path / "runs/a/log.txt").read_text()
