"""Launching: a single process, ``--num-gpus N`` local processes, or an existing torchrun environment.

``launch(fn, num_procs, *args)`` calls ``fn(*args)`` in every process after the process group is up:

- ``WORLD_SIZE`` already set (torchrun, one or many nodes): just join it; ``num_procs`` is ignored.
- ``num_procs > 1``: spawn ``num_procs`` local processes (one per GPU; on CPU simply that many gloo processes)
  on a free loopback port.
- otherwise: run ``fn`` in this process.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

from vidseg.engine import dist
from vidseg.utils.threads import configure_threads

__all__ = ["launch", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    local_rank: int,
    fn: Callable,
    nprocs: int,
    addr: str,
    port: int,
    node: tuple[int, int],
    backend,
    args: tuple,
) -> None:
    num_machines, machine_rank = node
    os.environ.update(
        {
            "RANK": str(machine_rank * nprocs + local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(nprocs * num_machines),
            "LOCAL_WORLD_SIZE": str(nprocs),
            "MASTER_ADDR": addr,
            "MASTER_PORT": str(port),
        }
    )
    # This rank's share of the cores, before the first tensor op; the job's worker refines it from the config.
    configure_threads(local_procs=nprocs, log=False)
    dist.init_from_env(backend)
    try:
        rc = fn(*args)
    except Exception as e:
        from vidseg.utils.errors import debug_enabled, expected_error_line

        line = expected_error_line(e)
        if line is None or debug_enabled():
            raise  # a bug: the traceback reaches the launcher
        import logging

        logging.getLogger("vidseg").error("rank %d: %s", local_rank, line)  # console and log.txt
        rc = 1
    finally:
        dist.destroy()
    if rc:
        sys.exit(int(rc))  # the parent sees a failed rank


def _join_forwarding_signals(ctx: Any) -> None:
    """Wait for the spawned ranks. SIGTERM to this launcher is forwarded to them (each saves a checkpoint and
    stops); SIGINT is ignored here because Ctrl-C already reaches every process of the terminal's group."""

    def forward(signum: int, _frame: Any) -> None:
        for p in ctx.processes:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        old[signal.SIGTERM] = signal.signal(signal.SIGTERM, forward)
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while not ctx.join():
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def launch(fn: Callable[..., Any], num_procs: int = 1, *args: Any, backend: str | None = None) -> Any:
    """Run ``fn(*args)`` on every rank (see module docstring); ``fn``'s value in single-process runs.

    Several machines without torchrun (``train_net.py --num-machines M``): ``VIDSEG_NUM_MACHINES``,
    ``VIDSEG_MACHINE_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` describe the layout; every machine spawns
    ``num_procs`` processes.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_from_env(backend)
        try:
            return fn(*args)
        finally:
            dist.destroy()
    machines = int(os.environ.get("VIDSEG_NUM_MACHINES", "1"))
    if num_procs > 1 or machines > 1:
        if backend == "nccl" and torch.cuda.device_count() < num_procs:
            raise RuntimeError(f"--num-gpus {num_procs} but only {torch.cuda.device_count()} CUDA devices")
        if machines > 1:
            node = (machines, int(os.environ.get("VIDSEG_MACHINE_RANK", "0")))
            addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        else:
            node, addr, port = (1, 0), "127.0.0.1", free_port()
        ctx = mp.start_processes(
            _worker,
            args=(fn, num_procs, addr, port, node, backend, args),
            nprocs=num_procs,
            start_method="spawn",
            join=False,
        )
        _join_forwarding_signals(ctx)
        return 0
    return fn(*args)
