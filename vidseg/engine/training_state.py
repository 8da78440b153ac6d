"""The resumable state of a training run: its checkpoint files and the RNG states they hold.

Weights for a model (``MODEL.WEIGHTS``, official files) are read by :func:`vidseg.checkpoints.load_weights`;
this module holds only what the trainer writes and reads back to resume.

A vidseg training checkpoint is a dict with keys ``model``, ``optimizer``, ``scheduler``, ``scaler``
(or None), ``epoch`` (the epoch to run next or in progress, 1-based), ``iter`` (global iterations done),
``rng`` (one entry per rank: python, numpy, torch CPU and CUDA states), ``sampler``
(``{"epoch", "index"}``), ``config`` (plain dict), ``best`` (``{"metric", "value"}``)
and ``format`` (``"vidseg-train-v1"``).

Files in ``OUTPUT_DIR``: ``checkpoint.pth`` (last), ``checkpoint_epoch_{e}.pth`` / ``checkpoint_iter_{i}.pth``
(every ``SOLVER.CHECKPOINT_PERIOD``), ``checkpoint_best.pth`` (best ``TEST.BEST_METRIC``).
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseg.utils.atomic import atomic_write_bytes

__all__ = [
    "LAST",
    "BEST",
    "save_training_state",
    "load_training_state",
    "has_training_state",
    "get_rng_state",
    "set_rng_state",
]

LAST = "checkpoint.pth"
BEST = "checkpoint_best.pth"
FORMAT = "vidseg-train-v1"


def save_training_state(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` of a training checkpoint, written atomically and durably (:mod:`vidseg.utils.atomic`).

    A crash at any point leaves either the old file or the new one, never a torn file; the file gets the
    umask's mode, like every other file of the run.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer(), durable=True)


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a vidseg training checkpoint on CPU (``load_state_dict`` moves tensors to the model's device);
    errors name the file and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from vidseg.checkpoints.safe_load import safe_read

    try:  # the same safe reader as MODEL.WEIGHTS: no arbitrary code from a file in OUTPUT_DIR either
        ckpt = safe_read(path)
    except Exception as e:  # a torn or foreign file: say which
        raise RuntimeError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RuntimeError(f"{path}: not a vidseg checkpoint (no 'model' key)")
    return ckpt


def has_training_state(output_dir: str | os.PathLike) -> bool:
    return (Path(output_dir) / LAST).is_file()


def get_rng_state() -> dict:
    """Every RNG the training step may touch: python, numpy, torch CPU and (when present) all CUDA devices."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
