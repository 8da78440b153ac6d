"""The CPU thread rule (vidseg.utils.threads): affinity / local processes - workers; user values win.

No clocks: the tests check what is chosen, in this process (pure rule), in fresh processes (real affinity,
``torch.set_num_threads`` before the rule) and in the ranks spawned by ``--num-gpus 2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidseg.engine.batch_sampler import ResumableBatchSampler
from vidseg.engine.launch import launch
from vidseg.engine.trainer import Trainer
from vidseg.utils.threads import (
    QUIET_SPINCOUNT,
    dataloader_worker_init,
    other_runnable_threads,
    plan_threads,
    prepare_env,
)

ROOT = Path(__file__).resolve().parents[2]
QUIET: dict[str, str] = {}  # an environment without any thread setting


@pytest.mark.parametrize(
    ("cores", "procs", "workers", "threads"),
    [(2, 1, 0, 2), (2, 2, 0, 1), (16, 4, 0, 4), (16, 4, 1, 3), (2, 1, 1, 1), (1, 4, 0, 1), (3, 2, 0, 1)],
)
def test_rule_divides_affinity_by_local_processes_minus_workers(cores, procs, workers, threads):
    plan = plan_threads(cores, procs, workers, env=QUIET)
    assert plan.threads == threads
    assert f"{cores} core(s)" in plan.why and f"{procs} local process(es)" in plan.why
    assert ("DataLoader worker" in plan.why) == (workers > 0)
    assert plan.workers is None  # not a CPU run: the configured workers are kept


@pytest.mark.parametrize(
    ("cores", "procs", "workers", "kept", "threads"),
    [(2, 1, 1, None, 1), (2, 1, 2, 1, 1), (2, 2, 1, 0, 1), (16, 4, 1, None, 3), (16, 4, 6, 3, 1)],
)
def test_cpu_run_caps_workers_so_that_workers_and_threads_fit(cores, procs, workers, kept, threads):
    plan = plan_threads(cores, procs, workers, env=QUIET, cpu_run=True)
    assert (plan.workers, plan.threads) == (kept, threads)
    assert (plan.workers if kept is not None else workers) + plan.threads <= max(1, cores // procs)
    assert ("lowered to" in plan.why) == (kept is not None)


def test_user_thread_values_keep_the_configured_workers():
    assert plan_threads(2, 2, 2, env={"OMP_NUM_THREADS": "1"}, cpu_run=True).workers is None
    assert plan_threads(2, 2, 2, env=QUIET, cfg_threads=1, cpu_run=True).workers is None
    assert plan_threads(2, 2, 2, env={"VIDSEG_THREAD_RULE": "off"}, cpu_run=True).workers is None


def test_user_values_win_in_order():
    env = {"OMP_NUM_THREADS": "5", "MKL_NUM_THREADS": "6"}
    assert plan_threads(8, 2, 1, env=env, cfg_threads=3, torch_user_threads=4).threads == 3
    assert plan_threads(8, 2, 1, env=env, cfg_threads=3).why == "MODEL.CPU_THREADS"
    torch_set = plan_threads(8, 2, 1, env=env, torch_user_threads=4)
    assert torch_set.threads == 4 and "torch.set_num_threads" in torch_set.why
    assert plan_threads(8, 2, 1, env=env).threads == 5
    assert plan_threads(8, 2, 1, env={"MKL_NUM_THREADS": "6"}).why == "MKL_NUM_THREADS=6"
    # Not a positive number: ignored, the rule decides.
    assert plan_threads(8, 2, 0, env={"OMP_NUM_THREADS": "many"}).threads == 4
    assert plan_threads(8, 2, 0, env={"OMP_NUM_THREADS": "0"}).threads == 4


def test_rule_off_leaves_torch_alone():
    plan = plan_threads(8, 2, 1, env={"VIDSEG_THREAD_RULE": "off"}, cfg_threads=3)
    assert plan.threads is None and plan.wait_why == "rule off"
    assert "torch's choice" in plan.describe()


def test_prepare_env_waits_passively_on_a_busy_machine_and_spins_briefly_on_a_quiet_one():
    busy: dict[str, str] = {}
    prepare_env(busy, others=3, cores=2)
    assert busy["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in busy
    assert plan_threads(2, env=busy).wait_why == (
        "vidseg default, busy machine at start: 3 other runnable thread(s) on 2 core(s)"
    )
    quiet: dict[str, str] = {}
    prepare_env(quiet, others=0, cores=2)
    assert "OMP_WAIT_POLICY" not in quiet and quiet["GOMP_SPINCOUNT"] == QUIET_SPINCOUNT
    plan = plan_threads(2, env=quiet)
    assert plan.wait_policy == f"default, GOMP_SPINCOUNT={QUIET_SPINCOUNT}"
    assert plan.wait_why.startswith("vidseg default, quiet machine at start: 0 other")
    # The threshold is half the cores: one other runnable thread is quiet on 8 cores, busy on 2.
    eight: dict[str, str] = {}
    prepare_env(eight, others=1, cores=8)
    assert "GOMP_SPINCOUNT" in eight
    two: dict[str, str] = {}
    prepare_env(two, others=1, cores=2)
    assert two["OMP_WAIT_POLICY"] == "PASSIVE"
    # A child process (spawned rank) sees the parent's choice and keeps it.
    child = dict(quiet)
    prepare_env(child, others=5, cores=2)
    assert child == quiet
    user = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_env(user, others=0, cores=2)
    assert user == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert plan_threads(2, env=user).describe().endswith("OMP_WAIT_POLICY ACTIVE (set by the user)")
    off = {"VIDSEG_THREAD_RULE": "off"}
    prepare_env(off, others=0, cores=2)
    assert off == {"VIDSEG_THREAD_RULE": "off"}


def test_other_runnable_threads_reads_proc_loadavg():
    n = other_runnable_threads(samples=3)
    if not os.path.exists("/proc/loadavg"):
        assert n is None
    else:
        assert isinstance(n, int) and n >= 0


def test_a_user_spin_time_is_the_users_wait_choice():
    # GOMP_SPINCOUNT / KMP_BLOCKTIME say how long a thread spins before it sleeps: vidseg then sets no policy.
    for var, value in (("GOMP_SPINCOUNT", "10000"), ("KMP_BLOCKTIME", "1")):
        env = {var: value}
        prepare_env(env, others=0, cores=2)
        assert env == {var: value}
        assert plan_threads(2, env=env).wait_why == f"spin time set by the user: {var}={value}"
    both = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "5"}
    prepare_env(both, others=0, cores=2)
    assert plan_threads(2, env=both).wait_why == "set by the user"


_CHILD = r"""
import json, os, sys
from vidseg.utils.threads import configure_threads, prepare_env
prepare_env()
out = {"wait": os.environ.get("OMP_WAIT_POLICY") or "spin=" + os.environ.get("GOMP_SPINCOUNT", "")}
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, cpus[:1])                 # one core allowed
out["one_core"] = configure_threads(local_procs=1, log=False).threads
os.sched_setaffinity(0, cpus)
out["all"] = configure_threads(local_procs=1, log=False).threads
out["two_procs"] = configure_threads(local_procs=2, log=False).threads
os.environ["LOCAL_WORLD_SIZE"] = "2"                # as torchrun / --num-gpus 2 set it
out["local_world"] = configure_threads(log=False).threads
import torch
torch.set_num_threads(3)                           # the user's own call wins over the rule
plan = configure_threads(local_procs=1, log=False)
out["user"], out["user_why"], out["torch"] = plan.threads, plan.why, torch.get_num_threads()
out["cfg"] = configure_threads(cfg_threads=1, log=False).threads
out["cpus"] = len(cpus)
print(json.dumps(out))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_rule_in_a_fresh_process_follows_affinity_and_keeps_the_users_call():
    prefixes = ("OMP_", "GOMP_", "KMP_", "MKL_", "LOCAL_WORLD", "VIDSEG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    n = out["cpus"]
    assert out["wait"] in ("PASSIVE", f"spin={QUIET_SPINCOUNT}")  # busy / quiet machine at start
    assert out["one_core"] == 1
    assert out["all"] == n
    assert out["two_procs"] == out["local_world"] == max(1, n // 2)
    assert out["user"] == out["torch"] == 3 and "torch.set_num_threads" in out["user_why"]
    assert out["cfg"] == 1


def _report_threads(path: str) -> int:
    """Run on each spawned rank: what the rank got before any work."""
    rank = os.environ["RANK"]
    info = {"threads": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}
    Path(path, f"rank{rank}.json").write_text(json.dumps(info))
    return 0


def test_spawned_ranks_share_the_cores(tmp_path, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VIDSEG_THREAD_RULE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert launch(_report_threads, 2, str(tmp_path), backend="gloo") == 0
    share = max(1, len(os.sched_getaffinity(0)) // 2) if hasattr(os, "sched_getaffinity") else None
    for r in (0, 1):
        info = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert info["wait"] == "PASSIVE"
        if share is not None:
            assert info["threads"] == share


class _ThreadsSeen(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[int, str]:
        return torch.get_num_threads(), os.environ.get("OPENBLAS_NUM_THREADS", "")


def test_dataloader_workers_keep_one_thread():
    loader = torch.utils.data.DataLoader(
        _ThreadsSeen(), batch_size=None, num_workers=1, worker_init_fn=dataloader_worker_init
    )
    assert [tuple(x) for x in loader] == [(1, "1"), (1, "1")]


def test_trainer_loader_uses_the_worker_init():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    kw = dict(num_workers=1, max_epochs=1)
    trainer = Trainer(
        model, torch.nn.MSELoss(), opt, sched, _ThreadsSeen(), list, ResumableBatchSampler(2, 1), **kw
    )
    assert trainer._loader().worker_init_fn is dataloader_worker_init


def test_cpu_training_run_logs_the_rule_and_starts_the_capped_workers(tmp_path, monkeypatch):
    from engine_standins import StandinData, toy_cfg

    import vidseg.utils.threads as threads
    from vidseg.engine.run import RunOptions, run_train

    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VIDSEG_THREAD_RULE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(threads, "affinity_cores", lambda: 1)  # a process allowed on one core
    seen: list[int] = []
    real_loader = Trainer._loader
    monkeypatch.setattr(Trainer, "_loader", lambda self: seen.append(self.num_workers) or real_loader(self))
    before = torch.get_num_threads()
    try:
        cfg = toy_cfg(tmp_path, "DATALOADER.NUM_WORKERS", 1, "TEST.EVAL_PERIOD", 0, "SOLVER.EPOCHS", 1)
        assert run_train(cfg, RunOptions(progress=False), data=StandinData()) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {0}
    log = (tmp_path / "log.txt").read_text()
    assert (
        "CPU threads: 1 intra-op thread(s) (1 core(s) in this process's affinity / 1 local process(es)" in log
    )
    assert "DATALOADER.NUM_WORKERS 1 lowered to 0 (CPU run, 1 core(s))" in log
