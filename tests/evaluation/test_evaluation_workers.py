"""The metric over forked worker processes: identical numbers for any worker count, errors in serial order, a
dead worker reported, and the shard/worker helpers."""

import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from evalcase_gen import random_case

import vidseg.evaluation.ytvis_eval as ye
from vidseg.evaluation import EvalInputError, evaluate_ytvis
from vidseg.evaluation.forked import can_fork, resolve_workers, run_dynamic, run_sharded

needs_fork = pytest.mark.skipif(not can_fork(), reason="no fork on this platform")


def _eval(gt, res, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(res), progress=False, **kw)


@needs_fork
@pytest.mark.parametrize("seed", range(4))
def test_workers_give_identical_numbers(monkeypatch, seed):
    monkeypatch.setattr(ye, "_VIDEO_BATCH", 2)  # many small batches: 2 and 3 workers get real shards
    gt, res = random_case(seed + 500, n_videos=9, quirks=seed % 2 == 0)
    serial = _eval(gt, res, workers=1)
    for w in (2, 3):
        par = _eval(gt, res, workers=w)
        assert par.stats == serial.stats
        np.testing.assert_array_equal(par.precision, serial.precision)
        np.testing.assert_array_equal(par.recall, serial.recall)
        assert par.per_category_ap == serial.per_category_ap


@needs_fork
def test_workers_from_files_identical(monkeypatch, tmp_path):
    monkeypatch.setattr(ye, "_VIDEO_BATCH", 1)
    gt, res = random_case(77, n_videos=6, quirks=True)
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    serial = _eval(str(gp), str(rp), workers=1)
    par = _eval(str(gp), str(rp), workers=2)
    np.testing.assert_array_equal(par.precision, serial.precision)


@needs_fork
def test_error_in_a_later_shard_is_the_serial_error(monkeypatch):
    monkeypatch.setattr(ye, "_VIDEO_BATCH", 1)
    gt, res = random_case(3, n_videos=6, quirks=False)
    last_vid = max(v["id"] for v in gt["videos"])
    bad = next((i for i, r in enumerate(res) if r["video_id"] == last_vid and any(r["segmentations"])), None)
    if bad is None:
        pytest.skip("case without a prediction in the last video")
    t = next(t for t, s in enumerate(res[bad]["segmentations"]) if s)
    res[bad]["segmentations"][t]["counts"] = "\x7f\x7f"  # bad characters
    with pytest.raises(EvalInputError) as serial:
        _eval(gt, res, workers=1)
    with pytest.raises(EvalInputError) as par:
        _eval(gt, res, workers=3)
    assert str(par.value) == str(serial.value)
    assert f"entry {bad}" in str(par.value)


@needs_fork
def test_dead_worker_is_reported():
    parent = os.getpid()

    def work(shard, tick):
        if os.getpid() != parent and shard == 2:
            os._exit(3)
        return shard * 10

    with pytest.raises(RuntimeError, match="worker 2 died"):
        run_sharded([0, 1, 2], work)
    assert run_sharded([0, 1, 2], lambda s, tick: s * 10) == [0, 10, 20]


@needs_fork
def test_run_sharded_progress_and_unpicklable_error():
    seen = []

    def work(shard, tick):
        for _ in range(shard):
            tick(1)
        return shard

    assert run_sharded([3, 4, 5], work, on_progress=seen.append) == [3, 4, 5]
    assert sum(seen) == 12

    def bad(shard, tick):
        if shard:
            raise ValueError(lambda: None)  # an exception holding an unpicklable object
        return 0

    with pytest.raises(RuntimeError, match="ValueError"):
        run_sharded([0, 1], bad)


@needs_fork
def test_run_dynamic_order_balance_and_progress():
    import time

    seen = []

    def work(i):
        time.sleep(0.02 if i % 3 == 0 else 0.0)  # unequal items
        return (i, os.getpid())

    out = run_dynamic(12, work, 3, on_progress=seen.append, units=lambda i: i + 1)
    # Results come back in item order whichever process ran them (how many processes took part depends on the
    # machine's load, so it is not asserted).
    assert [i for i, _ in out] == list(range(12))
    assert sum(seen) == sum(range(1, 13))
    assert run_dynamic(3, lambda i: i * 2, 1) == [0, 2, 4]  # one worker: a plain loop


@needs_fork
def test_run_dynamic_raises_the_lowest_failing_item():
    import time

    def work(i):
        if i == 7:
            raise ValueError("item 7")
        if i == 3:
            time.sleep(0.2)  # the lower failure comes last in time
            raise ValueError("item 3")
        return i

    for _ in range(3):
        with pytest.raises(ValueError, match="item 3"):
            run_dynamic(10, work, 2)


def test_resolve_workers():
    with pytest.raises(ValueError, match="positive integer"):
        resolve_workers(0, 10)
    with pytest.raises(ValueError, match="positive integer"):
        resolve_workers(True, 10)
    assert resolve_workers(1, 100) == 1
    if can_fork():
        assert resolve_workers(4, 2) == 2  # at most one per item
        assert resolve_workers(None, 3, min_items_per_worker=4) == 1  # small input: no fork


@needs_fork
def test_parent_error_stops_children_despite_inherited_handlers(tmp_path):
    """A child still working (and holding a SIGTERM handler inherited from, say, a trainer) is stopped at once
    when the parent's own shard fails."""
    import signal
    import time

    parent = os.getpid()
    old = signal.signal(signal.SIGTERM, lambda *a: None)  # a handler that would ignore terminate()
    try:

        pid_file = tmp_path / "child.pid"

        def work(shard, tick):
            if os.getpid() == parent:
                for _ in range(3000):  # fail only once the child is at work (at most 30 s)
                    if pid_file.exists() and pid_file.read_text():
                        break
                    time.sleep(0.01)
                raise ValueError("parent shard failed")
            pid_file.write_text(str(os.getpid()))
            time.sleep(60)
            return shard

        with pytest.raises(ValueError, match="parent shard failed"):
            run_sharded([0, 1], work)
        child = int(pid_file.read_text())
        status = Path(f"/proc/{child}/status")
        # The child is gone (reaped) or at least dead (a zombie), not still sleeping through its 60 s.
        assert not status.exists() or "State:\tZ" in status.read_text()
    finally:
        signal.signal(signal.SIGTERM, old)


def _eval_in_pool_worker(args):
    gt, res = args
    return _eval(gt, res, workers=2).stats


@needs_fork
def test_daemonic_pool_worker_evaluates_in_one_process(monkeypatch):
    """A multiprocessing Pool worker may not have children: the metric then stays in that process."""
    import multiprocessing as mp

    monkeypatch.setattr(ye, "_VIDEO_BATCH", 1)
    gt, res = random_case(11, n_videos=4, quirks=False)
    with mp.get_context("fork").Pool(1) as pool:
        stats = pool.map(_eval_in_pool_worker, [(gt, res)])[0]
    assert stats == _eval(gt, res, workers=1).stats
