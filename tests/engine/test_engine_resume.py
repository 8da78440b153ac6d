"""Exact resume: a run killed with SIGKILL (or stopped with SIGTERM) mid-epoch and resumed ends bit for bit
where an uninterrupted run ends (toy model, stand-in data, one CPU process, no workers)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_standins import DumpHook, StandinData, toy_cfg
from monitor_helpers import wait_for

from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.training_state import load_training_state

RUNNER = Path(__file__).resolve().parent / "engine_runner.py"
ITER_OPTS = (
    "SOLVER.SCHEDULE",
    "iter",
    "SOLVER.MAX_ITER",
    9,
    "SOLVER.STEPS",
    "(5,)",
    "SOLVER.CHECKPOINT_PERIOD",
    2,
)
EPOCH_OPTS = ("SOLVER.EPOCHS", 3, "SOLVER.STEPS", "(2,)")


def _reference(out: Path, opts: tuple) -> dict:
    cfg = toy_cfg(out, "TEST.EVAL_PERIOD", 0, *opts)
    assert (
        run_train(cfg, RunOptions(progress=False, extra_hooks=(DumpHook(str(out)),)), data=StandinData()) == 0
    )
    return torch.load(out / "rank0.pt")


def _spawn(out: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, str(RUNNER), str(out), *args, "TEST.EVAL_PERIOD", "0"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _resume(out: Path, opts: tuple) -> dict:
    cfg = toy_cfg(out, "TEST.EVAL_PERIOD", 0, *opts)
    rc = run_train(
        cfg, RunOptions(progress=False, resume=True, extra_hooks=(DumpHook(str(out)),)), data=StandinData()
    )
    assert rc == 0
    return torch.load(out / "rank0.pt")


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a["iter"] == b["iter"]
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path):
    ref = _reference(tmp_path / "ref", ITER_OPTS)
    out = tmp_path / "killed"
    proc = _spawn(out, "--slow", *map(str, ITER_OPTS))
    wait_for(lambda: (out / "checkpoint_iter_4.pth").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    ck = load_training_state(out / "checkpoint.pth")
    assert 4 <= ck["iter"] < 9
    assert ck["sampler"]["index"] not in (0,)  # 3 batches per epoch: iterations 4 and 8 are mid-epoch
    _assert_bitwise_equal(_resume(out, ITER_OPTS), ref)


@pytest.mark.slow  # ~25 s: a second subprocess run; the SIGKILL test above covers exact resume in CI
def test_sigterm_saves_mid_epoch_and_resume_is_bit_exact(tmp_path):
    ref = _reference(tmp_path / "ref", EPOCH_OPTS)
    out = tmp_path / "stopped"
    proc = _spawn(out, "--slow", *map(str, EPOCH_OPTS))
    wait_for(lambda: (out / "checkpoint_epoch_1.pth").is_file(), proc)
    time.sleep(0.4)  # into epoch 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, proc.stdout.read()
    log = proc.stdout.read()
    assert "SIGTERM received" in log and "resume with --resume" in log
    ck = load_training_state(out / "checkpoint.pth")
    assert ck["epoch"] == 2 and 1 <= ck["sampler"]["index"] <= 3 and ck["iter"] < 9
    _assert_bitwise_equal(_resume(out, EPOCH_OPTS), ref)
