"""Run a worker in two spawned processes that form a gloo group, and collect what each rank reports."""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch.multiprocessing as mp


def run_ranks(target: Callable, args_of: Callable[[int, int, object], tuple], world: int = 2) -> dict:
    """Spawn ``target(*args_of(rank, port, queue))`` for every rank; each worker puts ``(rank, value)`` on
    ``queue``. Returns ``{rank: value}``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=args_of(r, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return results
