"""Distributed queries, reductions and gathers that also work without a process group.

The one home of these helpers: the engine, the models (loss normalisers) and evaluation (gathering
predictions) import them from here. Joining and leaving a process group is the engine's job, in
:mod:`vidseg.engine.dist`.

``torch.distributed`` is imported on first call, so importing this module (and the evaluation code that
uses it) does not import torch.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "is_dist",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "all_gather_object",
    "gather_to_main",
]


def _tdist() -> Any:
    """``torch.distributed``, or None on a torch build without distributed support."""
    try:
        import torch.distributed as tdist
    except ImportError:
        return None
    return tdist if tdist.is_available() else None


def is_dist() -> bool:
    """True inside an initialised process group."""
    tdist = _tdist()
    return tdist is not None and tdist.is_initialized()


def get_rank() -> int:
    return _tdist().get_rank() if is_dist() else 0


def get_world_size() -> int:
    return _tdist().get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    """torchrun's ``LOCAL_RANK`` inside a process group, else 0."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        _tdist().barrier()


def all_reduce_mean(value: float, device: Any = "cpu") -> float:
    """Mean of a Python number over ranks (the value itself without a process group).

    Used for loss normalisers (``num_masks``): every rank must divide by the same number. With NCCL the
    reduction runs on this rank's current CUDA device, whatever ``device`` says.
    """
    if not is_dist():
        return float(value)
    import torch

    tdist = _tdist()
    if tdist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return float(t.item()) / get_world_size()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a process group).

    Collective: every rank must call it. ``all_gather_object`` works on every backend (``gather_object`` not
    on all), which is why :func:`gather_to_main` uses it too.
    """
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    _tdist().all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """All ranks' ``obj`` in rank order on rank 0, None on the other ranks (``[obj]`` without a process
    group). Collective, as :func:`all_gather_object`."""
    gathered = all_gather_object(obj)
    return gathered if is_main_process() else None
