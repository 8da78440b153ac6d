"""TensorBoard: the grouped tags, evaluations at their iteration, and no step twice after SIGKILL + resume."""

from __future__ import annotations

import json
import signal

import pytest
from engine_standins import StandinData, toy_cfg
from monitor_helpers import spawn_run, wait_for

from vidseg.engine.run import RunOptions, run_train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

OPTS = ("TENSORBOARD_ON", True, "SOLVER.EPOCHS", 3, "SOLVER.STEPS", "(2,)")


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_steps_unique_after_sigkill_and_resume(tmp_path):
    out = tmp_path / "run"
    # 3 batches per epoch: the checkpoint of epoch 1 is at iteration 3; the run is killed at iteration 5,
    # after it wrote the points of iterations 4 and 5 that the resumed run writes again.
    proc = spawn_run(out, "5", *OPTS)
    try:
        wait_for(lambda: (tmp_path / "gate_at_5").exists(), proc, what="iteration 5")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    before = _scalars(out / "tensorboard")
    assert [s for s, _ in before["loss/total"]] == [1, 2, 3, 4, 5]

    cfg = toy_cfg(out, *OPTS)  # the resumed run in this process: one interpreter start less
    assert run_train(cfg, RunOptions(resume=True, progress=False), data=StandinData()) == 0
    assert "resumed from" in (out / "log.txt").read_text()

    tags = _scalars(out / "tensorboard")
    for tag, points in tags.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: steps repeat: {steps}"
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    assert [s for s, _ in tags["loss/total"]] == [r["iter"] for r in train] == list(range(1, 10))
    assert [v for _, v in tags["loss/total"]] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    # Evaluations at the iteration they were measured (end of epochs 1, 2, 3), not at the epoch number.
    assert [s for s, _ in tags["eval/segm/AP"]] == [r["iter"] for r in evals] == [3, 6, 9]
    # The groups: learning rates, losses and memory never share a tag prefix.
    assert {
        "loss/total",
        "loss/ce",
        "loss_unweighted/ce",
        "lr/base",
        "time/iter_time",
        "memory/peak memory",
    } <= set(tags)
