"""Run contiguous shards of a job in forked worker processes (Linux/macOS ``fork``), for the metric's
CPU-bound per-video work.

Forked children share the parent's loaded data copy-on-write (no pickling of the inputs); each returns one
pickled result through a pipe. The parent runs shard 0 itself, so ``W`` workers use ``W - 1`` children.
Errors keep the serial order: the first failing shard (in shard order) decides which exception is raised,
which is the one a serial run would have met first when shards are contiguous.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import traceback
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any, TypeVar

import numpy as np

_T = TypeVar("_T")
_R = TypeVar("_R")

MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


def resolve_workers(workers: int | None, num_items: int, min_items_per_worker: int = 1) -> int:
    """The number of processes to use for ``num_items`` items: ``workers`` as asked (at most one per item),
    or with None one per available CPU (at most ``MAX_AUTO_WORKERS``) and per ``min_items_per_worker``
    items; always 1 where ``fork`` is unavailable."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None (automatic), got {workers!r}")
    if not can_fork():
        return 1
    if workers is None:
        workers = min(available_cpus(), MAX_AUTO_WORKERS, num_items // max(1, min_items_per_worker))
    return max(1, min(workers, num_items))


def split_contiguous(costs: Sequence[float], parts: int) -> list[tuple[int, int]]:
    """Cut ``range(len(costs))`` into ``min(parts, len(costs))`` contiguous, non-empty ``(start, stop)``
    ranges of about equal total cost."""
    n = len(costs)
    parts = max(1, min(parts, n))
    cum = np.cumsum(np.asarray(costs, dtype=np.float64)) if n else np.zeros(0)
    total = float(cum[-1]) if n else 0.0
    cuts = [0]
    for k in range(1, parts):
        c = int(np.searchsorted(cum, total * k / parts, side="left")) + 1  # first prefix reaching k/parts
        c = min(max(c, cuts[-1] + 1), n - (parts - k))  # non-empty, and an item left for each later part
        cuts.append(c)
    cuts.append(n)
    return [(cuts[j], cuts[j + 1]) for j in range(parts)]


class _ChildError(RuntimeError):
    """An exception in a worker that could not be sent as itself (not picklable)."""


def run_sharded(
    shards: Sequence[_T],
    work: Callable[[_T, Callable[[int], None]], _R],
    on_progress: Callable[[int], None] | None = None,
) -> list[_R]:
    """``[work(shard, tick) for shard in shards]`` with shard 0 in this process and the others in forked
    children.

    Args:
        shards: the shards, in order.
        work: ``work(shard, tick) -> result``; calls ``tick(n)`` after each ``n`` units of progress. Its
            result must pickle (children send it back).
        on_progress: called in this process with the units done by all shards since the last call.

    Returns:
        The results in shard order. Raises the exception of the first shard (in order) that failed.
    """
    if len(shards) <= 1:
        return [work(s, on_progress or (lambda n: None)) for s in shards]
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)  # progress units done by the children
    seen = [0]

    def parent_tick(n: int) -> None:
        if on_progress is None:
            return
        with counter.get_lock():
            done_children = counter.value
        on_progress(n + done_children - seen[0])
        seen[0] = done_children

    def child_tick(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    children, conns = [], []
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork in a process with threads (e.g. tqdm's monitor): the children only
        # run numpy and pycocotools, never a lock another thread could hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        for shard in shards[1:]:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child_main, args=(work, shard, child_tick, send), daemon=True)
            p.start()
            send.close()
            children.append(p)
            conns.append(recv)
    try:
        first = work(shards[0], parent_tick)
        results: list[Any] = [first] + [None] * len(children)
        pending = dict(enumerate(conns))
        outcomes: dict[int, tuple] = {}
        while pending:
            ready = wait(list(pending.values()), timeout=0.2)
            parent_tick(0)
            for i, c in list(pending.items()):
                if c in ready:
                    try:
                        outcomes[i] = pickle.loads(c.recv_bytes())
                    except (EOFError, OSError):
                        code = children[i].exitcode
                        died = _ChildError(f"evaluation worker {i + 1} died (exit code {code})")
                        outcomes[i] = ("error", died)
                    del pending[i]
        parent_tick(0)
        for i in range(len(children)):
            status, value = outcomes[i]
            if status == "error":
                raise value
            results[i + 1] = value
        return results
    finally:
        for c in conns:  # first, so that a child blocked on a full pipe gets EPIPE instead of waiting
            c.close()
        for p in children:
            if p.is_alive():
                p.kill()  # SIGKILL: a handler the child inherited (e.g. the trainer's) cannot delay it
            p.join()


def _child_main(work: Callable, shard: Any, tick: Callable[[int], None], send: Any) -> None:
    # Handlers inherited from the parent (a trainer saving on SIGTERM, say) must not run here: the parent
    # handles Ctrl-C and stops its workers itself.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        payload = ("ok", work(shard, tick))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent, which raises it
        payload = ("error", e)
    try:
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an unpicklable result or exception: send its traceback as text
        err = payload[1] if payload[0] == "error" else None
        text = "".join(traceback.format_exception(err)) if err is not None else traceback.format_exc()
        data = pickle.dumps(("error", _ChildError(f"evaluation worker failed:\n{text}")))
    send.send_bytes(data)
    send.close()
