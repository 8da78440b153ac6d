"""Joining and leaving the process group of a job (torchrun's env vars): the engine-level part of distributed.

Rank/world queries, reductions and gathers live in :mod:`vidseg.utils.dist`, which every layer imports.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist

from vidseg.utils.dist import is_dist

__all__ = ["init_from_env", "destroy"]


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
