"""Forked worker processes (Linux/macOS ``fork``) for the metric's CPU-bound per-video work.

Forked children share the parent's loaded data copy-on-write (no pickling of the inputs); each returns one
pickled result through a pipe, and the parent works too (``W`` workers use ``W - 1`` children).
:func:`run_dynamic` hands out items (batches of videos) from a shared counter, so the load balances itself;
errors keep the serial order (the lowest failing item's exception is raised). :func:`run_sharded` is the
underlying one-task-per-process runner.
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
    """Whether this process may fork workers: the platform has ``fork``, and this is not a daemonic
    multiprocessing worker (e.g. in a ``Pool``), which multiprocessing forbids to have children."""
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


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


def run_dynamic(
    num_items: int,
    work_item: Callable[[int], _R],
    workers: int,
    on_progress: Callable[[int], None] | None = None,
    units: Callable[[int], int] = lambda i: 1,
) -> list[_R]:
    """``[work_item(i) for i in range(num_items)]`` over ``workers`` processes (this one and forked
    children), each taking the next item from a shared counter whenever it is free: the load balances itself
    (items of unequal cost, or a core busy with another job, cost no idle waiting at the end).

    Args:
        work_item: ``work_item(i) -> result``; the result must pickle (children send theirs back).
        on_progress: called in this process with the progress units done since the last call.
        units: progress units of item ``i`` (default 1).

    Returns:
        The results in item order. On errors, the exception of the lowest failing item is raised, the one a
        serial loop would have met first: items are taken in increasing order and a worker finishes the item
        it holds before it stops.
    """
    if workers <= 1 or num_items <= 1:
        out = []
        for i in range(num_items):
            out.append(work_item(i))
            if on_progress is not None:
                on_progress(units(i))
        return out
    ctx = mp.get_context("fork")
    next_item = ctx.Value("q", 0)
    stop = ctx.Value("b", 0)  # set after an error: no new items are taken

    def loop(_worker: int, tick: Callable[[int], None]) -> dict[int, tuple[bool, Any]]:
        done: dict[int, tuple[bool, Any]] = {}
        while not stop.value:
            with next_item.get_lock():
                i = next_item.value
                next_item.value = i + 1
            if i >= num_items:
                break
            try:
                done[i] = (True, work_item(i))
            except Exception as e:  # noqa: BLE001 - compared with the other workers' errors below
                done[i] = (False, e)
                stop.value = 1
                break
            tick(units(i))
        return done

    merged: dict[int, tuple[bool, Any]] = {}
    for part in run_sharded(list(range(workers)), loop, on_progress):
        merged.update(part)
    failed = [i for i, (ok, _) in merged.items() if not ok]
    if failed:
        raise merged[min(failed)][1]
    return [merged[i][1] for i in range(num_items)]
