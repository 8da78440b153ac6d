"""CPU threads: one rule for every entry point, so that vidseg does not oversubscribe a shared CPU.

Two steps, because OpenMP reads its environment once, when torch is imported:

- :func:`prepare_env` runs before ``import torch`` (the CLI, ``main.py``, ``train_net.py``; spawned ranks
  inherit the environment) and chooses how waiting OpenMP threads behave, unless the user did. On a machine
  that is busy when the run starts (other runnable threads, counted in ``/proc/loadavg``): ``OMP_WAIT_POLICY
  =PASSIVE``, so they sleep at once instead of spinning on the cores the other processes need (spinning made
  a quickstart 30x slower beside 3 busy processes). On a quiet one: a short spin (``GOMP_SPINCOUNT=10000``,
  microseconds), because sleeping at once makes every parallel region pay a wake-up (1.5x slower quiet
  training steps; benchmarks/contention.py measures both).
- :func:`configure_threads` runs in every process of a run before the first tensor operation (train and eval
  workers, each rank spawned by ``--num-gpus``) and sets the intra-op threads with ``torch.set_num_threads``.

The rule (:func:`plan_threads`): the cores in this process's CPU affinity, divided by the local processes of
the run (``LOCAL_WORLD_SIZE``), minus the DataLoader workers of this process (each keeps one thread, see
:func:`dataloader_worker_init`), at least 1. In a CPU run the workers are also capped so that workers +
threads fit in that share (on a GPU the workers feed the device and are kept). A value the user set always
wins, in this order: the config key ``MODEL.CPU_THREADS`` (> 0), ``torch.set_num_threads`` called before,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``; with any of them the workers are kept as configured.
``VIDSEG_THREAD_RULE=off`` leaves threads, workers and wait policy to torch and OpenMP.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

__all__ = [
    "ThreadPlan",
    "prepare_env",
    "plan_threads",
    "configure_threads",
    "dataloader_worker_init",
    "affinity_cores",
    "USER_WAIT_VARS",
    "QUIET_SPINCOUNT",
    "other_runnable_threads",
]

logger = logging.getLogger("vidseg")

OFF_VAR = "VIDSEG_THREAD_RULE"  # "off": no rule at all (the settings before the rule existed)
# Set by prepare_env with the reason of its choice: the wait variables then came from vidseg, not the user.
_MARK_VAR = "VIDSEG_SET_OMP_WAIT_POLICY"
_last_applied: int | None = None  # what configure_threads last passed to torch.set_num_threads


@dataclass(frozen=True)
class ThreadPlan:
    """What :func:`plan_threads` chose.

    Attributes:
        threads: intra-op threads for ``torch.set_num_threads``; None leaves torch's own choice.
        why: the reason, for the log line (e.g. ``"2 cores in affinity / 2 local processes"``).
        wait_policy: ``OMP_WAIT_POLICY`` in effect (``"default"`` when unset).
        wait_why: ``"vidseg default, <busy/quiet machine at start: ...>"``, ``"set by the user"``,
            ``"spin time set by the user: ..."`` or ``"rule off"``.
        workers: DataLoader workers to start (lowered from the configured count in a CPU run where they would
            not fit), or None to keep the configured count.
    """

    threads: int | None
    why: str
    wait_policy: str
    wait_why: str
    workers: int | None = None

    def describe(self) -> str:
        n = "torch's choice" if self.threads is None else f"{self.threads} intra-op thread(s)"
        return f"CPU threads: {n} ({self.why}); OMP_WAIT_POLICY {self.wait_policy} ({self.wait_why})"


def _rule_off(env: Mapping[str, str]) -> bool:
    return env.get(OFF_VAR, "").strip().lower() in ("off", "0", "false", "no")


# Variables by which a user chooses how OpenMP threads wait: the policy itself, and the spin time before a
# thread sleeps (libgomp's GOMP_SPINCOUNT, Intel OpenMP's KMP_BLOCKTIME). Any of them set: vidseg sets none.
USER_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _user_wait(env: Mapping[str, str]) -> str | None:
    """The first wait variable the user set, as ``NAME=value``, or None."""
    for var in USER_WAIT_VARS:
        if env.get(var):
            return f"{var}={env[var]}"
    return None


QUIET_SPINCOUNT = "10000"  # GOMP_SPINCOUNT on a quiet machine: spin some microseconds, then sleep


def other_runnable_threads(samples: int = 5) -> int | None:
    """Threads of other processes that are runnable now: the median over ``samples`` reads of the running
    count in ``/proc/loadavg`` (4th field, ``running/total``), minus this one; None where there is no
    ``/proc/loadavg``. (The load averages lag by a minute; this count is immediate.)"""
    counts = []
    for _ in range(max(1, samples)):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return None
    counts.sort()
    return max(0, counts[len(counts) // 2])


def prepare_env(
    env: MutableMapping[str, str] | None = None, others: int | None = None, cores: int | None = None
) -> None:
    """Before ``import torch``: choose how waiting OpenMP threads behave, unless the user chose (one of
    :data:`USER_WAIT_VARS` set) or the rule is off. Later imports of torch in this process and every child
    process (spawned ranks, subprocesses) see it.

    Args:
        env: the environment to change (``os.environ``).
        others: runnable threads of other processes (None: :func:`other_runnable_threads`; unknown counts as
            busy). ``others >= max(1, cores // 2)`` is a busy machine: ``OMP_WAIT_POLICY=PASSIVE``; else
            ``GOMP_SPINCOUNT`` = :data:`QUIET_SPINCOUNT`.
        cores: CPUs in this process's affinity (None: :func:`affinity_cores`).
    """
    env = os.environ if env is None else env
    if _rule_off(env) or _user_wait(env):
        return
    cores = affinity_cores() if cores is None else max(1, int(cores))
    others = other_runnable_threads() if others is None else max(0, int(others))
    if others is None or others >= max(1, cores // 2):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        seen = "unknown" if others is None else str(others)
        env[_MARK_VAR] = f"busy machine at start: {seen} other runnable thread(s) on {cores} core(s)"
    else:
        env["GOMP_SPINCOUNT"] = QUIET_SPINCOUNT
        env[_MARK_VAR] = f"quiet machine at start: {others} other runnable thread(s) on {cores} core(s)"


def _positive_int(text: str | None) -> int | None:
    try:
        n = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def plan_threads(
    cores: int,
    local_procs: int = 1,
    workers: int = 0,
    env: Mapping[str, str] | None = None,
    cfg_threads: int = 0,
    torch_user_threads: int | None = None,
    cpu_run: bool = False,
) -> ThreadPlan:
    """The thread rule, without side effects (see the module docstring).

    Args:
        cores: CPUs in this process's affinity.
        local_procs: processes of the run on this machine (``--num-gpus N`` / ``torchrun --nproc_per_node``).
        workers: DataLoader worker processes this process starts.
        env: the environment (``os.environ``).
        cfg_threads: ``MODEL.CPU_THREADS``; > 0 wins over everything.
        torch_user_threads: the value of a ``torch.set_num_threads`` call made before, or None.
        cpu_run: the model runs on the CPU: workers beyond the share minus one thread are not started (with
            user thread values, or on a GPU, the workers are kept).
    """
    env = os.environ if env is None else env
    policy = env.get("OMP_WAIT_POLICY") or "default"
    if _rule_off(env):
        return ThreadPlan(None, f"{OFF_VAR}=off", policy, "rule off")
    mark = env.get(_MARK_VAR, "")
    user_wait = _user_wait(env)
    if mark:  # prepare_env chose (PASSIVE or a short spin)
        wait_why = f"vidseg default, {mark}"
        if policy == "default" and env.get("GOMP_SPINCOUNT"):
            policy = f"default, GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}"
    elif policy == "default" and user_wait:
        wait_why = f"spin time set by the user: {user_wait}"
    elif policy == "default":
        wait_why = "not set; torch was imported before vidseg could set it"
    else:
        wait_why = "set by the user"
    if cfg_threads and cfg_threads > 0:
        return ThreadPlan(int(cfg_threads), "MODEL.CPU_THREADS", policy, wait_why)
    if torch_user_threads is not None:
        return ThreadPlan(torch_user_threads, "torch.set_num_threads called before", policy, wait_why)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        n = _positive_int(env.get(var))
        if n is not None:
            return ThreadPlan(n, f"{var}={n}", policy, wait_why)
    cores, local_procs, workers = max(1, cores), max(1, local_procs), max(0, workers)
    share = max(1, cores // local_procs)
    why = f"{cores} core(s) in this process's affinity / {local_procs} local process(es)"
    configured, kept = workers, None
    if cpu_run and workers > share - 1:
        kept = workers = max(0, share - 1)
    threads = max(1, share - workers)
    if workers:
        why += f" - {workers} DataLoader worker(s)"
    if kept is not None:
        why += f"; DATALOADER.NUM_WORKERS {configured} lowered to {kept} (CPU run, {share} core(s))"
    return ThreadPlan(threads, why, policy, wait_why, kept)


def affinity_cores() -> int:
    """CPUs this process may run on (its affinity mask; all CPUs where the platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _torch_default_threads(env: Mapping[str, str]) -> int:
    """What torch picks at import: OMP_NUM_THREADS / MKL_NUM_THREADS, else OpenMP's count (the affinity)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        n = _positive_int(env.get(var))
        if n is not None:
            return n
    return affinity_cores()


def configure_threads(
    local_procs: int | None = None,
    workers: int = 0,
    cfg_threads: int = 0,
    log: bool = True,
    cpu_run: bool = False,
) -> ThreadPlan:
    """Apply the rule in this process: ``torch.set_num_threads`` and one log line saying what and why.

    Args:
        local_procs: local processes of the run; None reads ``LOCAL_WORLD_SIZE`` (set by torchrun and by
            ``vidseg.engine.launch`` in every spawned rank), else 1.
        workers: DataLoader workers of this process.
        cfg_threads: ``MODEL.CPU_THREADS`` (0: not set).
        log: write the decision to the ``vidseg`` logger (INFO).
        cpu_run: the model runs on the CPU (see :func:`plan_threads`); ``plan.workers`` is then the number of
            DataLoader workers to start when it is not None.
    """
    global _last_applied
    was_imported = "torch" in sys.modules  # if not, nobody can have called torch.set_num_threads yet
    import torch

    user_torch = None
    if was_imported:
        now = torch.get_num_threads()
        # Ours unless it differs from what we set last (or, before our first call, from torch's default).
        expected = _torch_default_threads(os.environ) if _last_applied is None else _last_applied
        if now != expected:
            user_torch = now

    if local_procs is None:
        local_procs = _positive_int(os.environ.get("LOCAL_WORLD_SIZE")) or 1
    plan = plan_threads(affinity_cores(), local_procs, workers, os.environ, cfg_threads, user_torch, cpu_run)
    if plan.threads is not None and plan.threads != torch.get_num_threads():
        torch.set_num_threads(plan.threads)
    if plan.threads is not None:
        _last_applied = plan.threads
    if log:
        logger.info("%s", plan.describe())
    return plan


def dataloader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the DataLoaders: one thread per worker process (torch sets its own pool to 1 in
    workers; this also covers OpenMP / BLAS pools of libraries the worker starts later)."""
    del worker_id
    import torch

    torch.set_num_threads(1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
