"""Run setup: output folder policy, config.yaml, logging, seeding, determinism, device, batch split."""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from vidseg.config import config_to_dict
from vidseg.engine.training_state import has_training_state
from vidseg.utils import dist
from vidseg.utils.atomic import atomic_write_text

__all__ = [
    "RunDirError",
    "decide_resume",
    "write_config",
    "setup_logging",
    "seed_all",
    "set_deterministic",
    "resolve_device",
    "per_rank_batch_size",
    "absolute_paths",
    "PATH_KEYS",
]

logger = logging.getLogger("vidseg")

# Keys that may change between a run and its resumption without making it "another run".
_RUN_KEYS = (
    "OUTPUT_DIR",
    "VISDOM_ON",
    "VISDOM_PORT",
    "VISDOM_SERVER",
    "RESUME_VIS",
    "VISDOM_AND_LOG_INTERVAL",
    "TENSORBOARD_ON",
    "DATALOADER.NUM_WORKERS",
    "MODEL.CPU_THREADS",
    "MODEL.DEVICE",
    "DATASETS.ROOT",
    "MODEL.CLASS_NAMES",  # filled in from the training set by the run itself
    "MODEL.CATEGORY_IDS",
)
# Path keys made absolute in a run's config, so that OUTPUT_DIR/config.yaml works from any folder.
PATH_KEYS = (
    "OUTPUT_DIR",
    "MODEL.WEIGHTS",
    "DATASETS.ROOT",
    "DATASETS.CUSTOM_TRAIN_JSON",
    "DATASETS.CUSTOM_TRAIN_IMAGES",
    "DATASETS.CUSTOM_VAL_JSON",
    "DATASETS.CUSTOM_VAL_IMAGES",
)


class RunDirError(RuntimeError):
    """The output folder holds another run's checkpoints (or none to resume from)."""


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _absolute(value: Any) -> Any:
    if not isinstance(value, str) or not value or "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def absolute_paths(cfg: Any) -> None:
    """Make the :data:`PATH_KEYS` of ``cfg`` (not frozen) absolute, against the current folder; an empty
    ``DATASETS.ROOT`` becomes the root it stands for (``$VIDSEG_DATASETS``, else ``./datasets``)."""
    for key in PATH_KEYS:
        node, leaf = cfg, key
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if key == "DATASETS.ROOT" and not node[leaf]:
            node[leaf] = os.environ.get("VIDSEG_DATASETS") or "datasets"
        node[leaf] = _absolute(node[leaf])


def config_differences(old: dict, new: dict) -> list[str]:
    """Keys whose values differ between two config dicts, ignoring the run keys (paths compare absolute:
    a run's config.yaml stores them so)."""
    a, b = _flat(old), _flat(new)
    for d in (a, b):
        for k in PATH_KEYS:
            if k in d:
                d[k] = _absolute(d[k])
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in _RUN_KEYS and a.get(k) != b.get(k)]


def decide_resume(cfg: Any, resume: bool = False, overwrite: bool = False) -> bool:
    """Whether this run continues from ``OUTPUT_DIR/checkpoint.pth``.

    - ``overwrite``: start afresh (files are replaced as the new run writes them);
    - ``resume``: continue; an error when there is nothing to resume;
    - neither: continue automatically when the folder holds a checkpoint of the same config; an error naming
      the differing keys when its ``config.yaml`` differs (so a run never clobbers another run's checkpoints).
    """
    out = Path(cfg.OUTPUT_DIR)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if overwrite:
        return False
    if not has_training_state(out):
        if resume:
            raise RunDirError(f"--resume: no checkpoint to resume from in {out} (looked for checkpoint.pth)")
        return False
    if resume:
        return True
    cfg_file = out / "config.yaml"
    if cfg_file.is_file():
        try:
            old = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise RunDirError(f"{cfg_file}: unreadable ({e}); pass --resume or --overwrite") from None
        diff = config_differences(old, config_to_dict(cfg))
        if diff:
            shown = ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
            raise RunDirError(
                f"OUTPUT_DIR {out} holds checkpoints of a run with another config (differs at {shown}); "
                "pass --resume to continue it with the new config, --overwrite to start afresh there, "
                "or choose another OUTPUT_DIR"
            )
    return True


def write_config(cfg: Any) -> Path:
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / "config.yaml", cfg.dump())


class _TqdmHandler(logging.StreamHandler):
    """Console lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging(output_dir: str | os.PathLike | None, console: bool = True) -> logging.Logger:
    """``vidseg`` logger: rank 0 logs INFO to ``output_dir/log.txt`` (appended) and the console; other ranks
    log warnings to the console and errors also to that ``log.txt``."""
    log = logging.getLogger("vidseg")
    for h in list(log.handlers):
        if getattr(h, "_vidseg", False):
            log.removeHandler(h)
            h.close()
    log.propagate = False
    main = dist.is_main_process()
    log.setLevel(logging.INFO if main else logging.WARNING)
    fmt = logging.Formatter(f"[%(asctime)s r{dist.get_rank()}] %(levelname)s %(message)s", "%m/%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(_TqdmHandler())
    if main and output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(output_dir) / "log.txt", encoding="utf-8"))
    elif output_dir is not None:
        # Other ranks add their errors (one line each) to rank 0's log: the file opens only when one comes.
        err = logging.FileHandler(Path(output_dir) / "log.txt", encoding="utf-8", delay=True)
        err.setLevel(logging.ERROR)
        handlers.append(err)
    for h in handlers:
        h.setFormatter(fmt)
        h._vidseg = True  # type: ignore[attr-defined]
        log.addHandler(h)
    return log


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Callers pass ``SEED + rank``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """``torch.use_deterministic_algorithms`` plus the cuDNN/cuBLAS settings it needs."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE``: ``auto`` is ``cuda:<local rank>`` when CUDA is available, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.get_local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE {name!r} but CUDA is not available; use MODEL.DEVICE cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", dist.get_local_rank())
    return dev


def per_rank_batch_size(ims_per_batch: int, batch_size: int, world_size: int) -> int:
    """``SOLVER.IMS_PER_BATCH`` (global) split over ranks; when 0, ``SOLVER.BATCH_SIZE`` per rank."""
    if ims_per_batch <= 0:
        return batch_size
    if ims_per_batch % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH {ims_per_batch} is not divisible by the world size {world_size}"
        )
    return ims_per_batch // world_size
