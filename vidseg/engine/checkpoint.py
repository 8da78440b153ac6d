"""Crash-safe checkpoints and RNG state capture.

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
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "LAST",
    "BEST",
    "atomic_save",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "has_checkpoint",
    "load_model_weights",
    "remove_stale_temporaries",
    "file_mode",
]

LAST = "checkpoint.pth"
BEST = "checkpoint_best.pth"
FORMAT = "vidseg-train-v1"


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the umask (``mkstemp`` would
    give ``0o600``, unlike every other file of a run)."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _temporary_pattern(name: str) -> str:
    return f".{name}.*.tmp"


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of :func:`atomic_save` that a kill during a write left in ``folder`` (only
    those: ``.<name>.pth.<random>.tmp``, and ``config.yaml.tmp``). Call it before this run writes there.
    Returns the deleted paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [*folder.glob(_temporary_pattern("*.pth")), *folder.glob("config.yaml.tmp")]
    removed = []
    for p in sorted(found):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn file (but a kill can leave
    the temporary: :func:`remove_stale_temporaries`). The file gets the umask's mode, like every other file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # Name the file: "no space left on device" alone does not say where.
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a vidseg training checkpoint on CPU (``load_state_dict`` moves tensors to the model's device);
    errors name the file and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from vidseg.checkpoints.safe_load import load_checkpoint_file

    try:  # the same safe reader as MODEL.WEIGHTS: no arbitrary code from a file in OUTPUT_DIR either
        ckpt = load_checkpoint_file(path)
    except Exception as e:  # a torn or foreign file: say which
        raise RuntimeError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RuntimeError(f"{path}: not a vidseg checkpoint (no 'model' key)")
    return ckpt


def has_checkpoint(output_dir: str | os.PathLike) -> bool:
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


def load_model_weights(model: torch.nn.Module, path: str, *, shift_class_neuron: bool = False) -> str:
    """Initialise ``model`` from ``MODEL.WEIGHTS`` (vidseg or official formats, detected by their keys).

    ``shift_class_neuron`` is ``MODEL.SHIFT_CLASS_NEURON``: applied only to an official Deformable DETR file
    loaded into an image model, as DeVIS's main.py does (never to a DeVIS or vidseg file, so never twice).
    Returns the load report as text: what was mapped, shifted and left out."""
    from vidseg.checkpoints import load_weights

    return str(load_weights(model, path, shift_class_neuron=shift_class_neuron))
