"""Distributed helpers: rank/world queries, reductions and gathers that also work without a process group."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist

__all__ = [
    "is_dist",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "all_gather_object",
    "init_from_env",
    "destroy",
]


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    """Mean of a Python number over ranks (the value itself without a process group).

    Used for loss normalisers (``num_masks``): every rank must divide by the same number.
    """
    if not is_dist():
        return float(value)
    if tdist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return float(t.item()) / get_world_size()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's env vars (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``). Returns False (single process) when ``WORLD_SIZE`` is absent or 1.

    The backend is NCCL when CUDA is available, else gloo.
    """
    if is_dist():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group(backend=backend, init_method="env://")
    return True


def destroy() -> None:
    if is_dist():
        tdist.destroy_process_group()
