"""Metric writers: JSON lines and ``curves.png`` (always), Visdom and TensorBoard (optional). Rank 0 only.

Every writer has ``write_train(step, scalars, epoch)``, ``write_eval(epoch, metrics, step)`` and ``close()``;
``step`` is the iteration (evaluations included). Scalars are flat ``{name: float}``; eval metrics are flat
``{"segm/AP": ...}``. Plots group them by :mod:`vidseg.engine.metric_groups`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from vidseg.engine.metric_groups import split_eval, split_train
from vidseg.engine.visdom_writer import VisdomWriter

__all__ = ["JSONLinesWriter", "VisdomWriter", "TensorBoardWriter", "CurvesWriter", "read_records"]

logger = logging.getLogger("vidseg")


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` (torn or non-JSON lines are skipped; a missing file gives [])."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


class JSONLinesWriter:
    """Appends one JSON object per line to ``path``: ``{"type": "train", "iter", "epoch", ...scalars}`` or
    ``{"type": "eval", "epoch", "iter", ...metrics}``. Without ``resume_iter`` the file starts empty; on
    resume, lines past ``resume_iter`` (written after the checkpoint the run continues from) are dropped so
    the file reads as one uninterrupted run."""

    def __init__(self, path: str | os.PathLike, resume_iter: int | None = None) -> None:
        self.path = Path(path)
        if resume_iter is None:  # a fresh run: a fresh file
            self.path.write_text("", encoding="utf-8")
        elif self.path.is_file():
            keep = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("iter", 0) <= resume_iter:
                        keep.append(line)
                except json.JSONDecodeError:  # a line torn by a kill: drop it
                    continue
            self.path.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def _write(self, rec: dict) -> None:
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def write_train(self, step: int, scalars: dict[str, float], epoch: int = 0) -> None:
        self._write({"type": "train", "iter": step, "epoch": epoch, **scalars})

    def write_eval(self, epoch: int, metrics: dict[str, float], step: int = 0) -> None:
        self._write({"type": "eval", "epoch": epoch, "iter": step, **metrics})

    def close(self) -> None:
        self._f.close()


class TensorBoardWriter:
    """Scalars under ``log_dir``, tagged ``<group>/<trace>`` by :mod:`vidseg.engine.metric_groups`
    (``loss/total``, ``lr/base``, ``time/iter_time``, ``eval/segm/AP``, ...), all at x = iteration.

    On resume, ``purge_step = resume_iter + 1``: TensorBoard drops the events a killed run wrote past the
    checkpoint, so no step appears twice.
    """

    def __init__(self, log_dir: str | os.PathLike, resume_iter: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the 'tensorboard' package

        self.log_dir = str(log_dir)
        purge = resume_iter + 1 if resume_iter is not None else None
        self._w = SummaryWriter(log_dir=self.log_dir, purge_step=purge)

    def _add(self, groups: dict[str, dict[str, float]], step: int) -> None:
        for key, traces in groups.items():
            for name, v in traces.items():
                self._w.add_scalar(f"{key}/{name}", v, step)
        self._w.flush()

    def write_train(self, step: int, scalars: dict[str, float], epoch: int = 0) -> None:
        self._add(split_train(scalars), step)

    def write_eval(self, epoch: int, metrics: dict[str, float], step: int = 0) -> None:
        self._add(split_eval(metrics), step)

    def close(self) -> None:
        self._w.close()


class CurvesWriter:
    """Draws ``path`` (``OUTPUT_DIR/curves.png``: loss terms, learning rates, evaluation metrics, time) from
    the records of the run at each evaluation and at the end. ``history``: the ``metrics.jsonl`` records of
    a resumed run so far."""

    def __init__(self, path: str | os.PathLike, name: str, history: list[dict] | None = None) -> None:
        self.path, self.name = Path(path), name
        self.records: list[dict] = list(history or [])

    def draw(self) -> None:
        from vidseg.engine.curves import plot_runs

        try:
            plot_runs([(self.name, self.records)], self.path)
        except Exception as e:  # a picture is never worth a training run
            logger.warning("curves: could not draw %s (%s: %s)", self.path, type(e).__name__, e)

    def write_train(self, step: int, scalars: dict[str, float], epoch: int = 0) -> None:
        self.records.append({"type": "train", "iter": step, "epoch": epoch, **scalars})

    def write_eval(self, epoch: int, metrics: dict[str, float], step: int = 0) -> None:
        self.records.append({"type": "eval", "iter": step, "epoch": epoch, **metrics})
        self.draw()

    def close(self) -> None:
        if self.records:
            self.draw()
