"""Metric writers: JSON lines (always), Visdom and TensorBoard (optional). Rank 0 only.

Every writer has ``write_train(step, scalars)``, ``write_eval(epoch, metrics)`` and ``close()``. Scalars
are flat ``{name: float}``; eval metrics are flat ``{"segm/AP": ...}``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["JSONLinesWriter", "VisdomWriter", "TensorBoardWriter", "TRAIN_WINDOW", "EVAL_WINDOW"]

logger = logging.getLogger("vidseg")

# Window titles DeVIS users know (src/util/visdom_vis.py).
TRAIN_WINDOW = "TRAIN METRICS ITERS"
EVAL_WINDOW = "VAL EVAL EPOCHS"


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


class VisdomWriter:
    """Line plots on a Visdom server in env ``env`` (DeVIS: the basename of ``OUTPUT_DIR``).

    Windows: ``TRAIN METRICS ITERS`` (x = iteration; total loss, every loss term scaled and ``_unscaled``,
    ``lr_<group>``, ``iter_time``) and ``VAL EVAL EPOCHS`` (x = epoch; AP, AP50, AP75, AR1, AR10). The legend
    of a window is fixed by its first point; later missing values are plotted as gaps. An unreachable
    server or a missing ``visdom`` package gives one warning and the writer turns itself off.
    """

    def __init__(self, server: str, port: int, env: str, timeout_s: float = 3.0) -> None:
        self.env = env
        self.viz = None
        self._legends: dict[str, list[str]] = {}
        self._win_ids: dict[str, str] = {}
        self.where = f"{server}:{port}"
        try:
            import visdom
        except ImportError:
            self._disable("the 'visdom' package is not installed (pip install 'vidseg[visdom]')")
            return
        try:
            viz = visdom.Visdom(
                server=server, port=port, env=env, use_incoming_socket=False, raise_exceptions=False
            )
            ok = viz.check_connection(timeout_seconds=timeout_s)
        except Exception as e:  # the client raises various errors for bad URLs
            ok, viz = False, None
            logger.debug("visdom connection error: %s", e)
        if not ok:
            self._disable(f"Visdom server {self.where} is unreachable")
            return
        self.viz = viz

    def _disable(self, why: str) -> None:
        warnings.warn(f"{why}; training goes on without Visdom (VISDOM_ON False silences this)", stacklevel=3)
        logger.warning("%s; training goes on without Visdom", why)
        self.viz = None

    @property
    def enabled(self) -> bool:
        return self.viz is not None

    def window_id(self, title: str) -> str:
        """The Visdom window id used for ``title`` (stable: env + title)."""
        return self._win_ids.setdefault(title, f"{self.env}:{title}")

    def _plot(self, title: str, x: float, values: dict[str, float], xlabel: str) -> None:
        if self.viz is None:
            return
        legend = self._legends.get(title)
        first = legend is None
        if first:
            legend = sorted(values)
            self._legends[title] = legend
        y = np.array([[values.get(k, math.nan) for k in legend]], dtype=np.float64)
        xs = np.full_like(y, float(x))
        try:
            win = self.window_id(title)
            opts = {"title": title, "legend": legend, "xlabel": xlabel, "showlegend": True}
            if first:
                self.viz.line(X=xs, Y=y, win=win, env=self.env, opts=opts)
            else:
                self.viz.line(X=xs, Y=y, win=win, env=self.env, update="append")
            self.viz.save([self.env])
        except Exception as e:  # the server went away mid-run: warn once, carry on
            self._disable(f"Visdom server {self.where} failed ({type(e).__name__}: {e})")

    def write_train(self, step: int, scalars: dict[str, float], epoch: int = 0) -> None:
        self._plot(TRAIN_WINDOW, step, scalars, "iteration")

    def write_eval(self, epoch: int, metrics: dict[str, float], step: int = 0) -> None:
        self._plot(EVAL_WINDOW, epoch, metrics, "epoch")

    def close(self) -> None:
        pass


class TensorBoardWriter:
    """Scalars under ``log_dir``: ``train/<name>`` per iteration, ``eval/<name>`` per epoch."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the 'tensorboard' package

        self.log_dir = str(log_dir)
        self._w = SummaryWriter(log_dir=self.log_dir)

    def write_train(self, step: int, scalars: dict[str, float], epoch: int = 0) -> None:
        for k, v in scalars.items():
            self._w.add_scalar(f"train/{k}", v, step)
        self._w.flush()

    def write_eval(self, epoch: int, metrics: dict[str, float], step: int = 0) -> None:
        for k, v in metrics.items():
            self._w.add_scalar(f"eval/{k}", v, epoch)
        self._w.flush()

    def close(self) -> None:
        self._w.close()
