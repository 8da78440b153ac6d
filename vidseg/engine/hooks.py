"""The engine's hooks: metrics and progress, evaluation during training, checkpoints.

Registered in this order (evaluation before checkpoints, so the "best" rule sees the newest metric):
``MetricsHook``, ``EvalHook``, ``CheckpointHook``.
"""

from __future__ import annotations

import logging
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vidseg.engine.trainer import HookBase
from vidseg.engine.training_state import BEST, LAST, get_rng_state, save_training_state
from vidseg.utils import dist

__all__ = ["MetricsHook", "EvalHook", "CheckpointHook", "memory_mb"]

logger = logging.getLogger("vidseg")


def memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class MetricsHook(HookBase):
    """Console progress bar every step; every ``period`` steps the window medians of every scalar (DeVIS plots
    20-step medians) go to ``log.txt`` and to each writer in ``trainer.writers`` (rank 0)."""

    def __init__(self, period: int = 20, progress: bool = True) -> None:
        self.period = max(1, int(period))
        self.progress = progress
        self._window: dict[str, list[float]] = defaultdict(list)
        self._bar: tqdm | None = None

    def before_train(self) -> None:
        t = self.trainer
        if dist.is_main_process():
            self._bar = tqdm(
                total=t.total_iters,
                initial=t.iter,
                desc="train",
                unit="it",
                dynamic_ncols=True,
                disable=not self.progress,
            )

    def after_step(self) -> None:
        t = self.trainer
        lrs = t.lrs()
        scalars = {**t.step_losses, **lrs, "iter_time": t.step_time, "data_time": t.data_time}
        for k, v in scalars.items():
            self._window[k].append(v)
        mem = memory_mb(t.device)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                epoch=t.epoch,
                loss=f"{t.step_losses['loss']:.3f}",
                lr=f"{lrs.get('lr_base', next(iter(lrs.values())) if lrs else 0):.2e}",
                it_s=f"{t.step_time:.2f}",
                mem=f"{mem:.0f}M",
                refresh=False,
            )
        if t.iter % self.period == 0 or t.iter >= t.total_iters:
            self.flush(mem)

    def flush(self, mem: float | None = None) -> None:
        if not self._window:
            return
        t = self.trainer
        med = {k: statistics.median(v) for k, v in self._window.items()}
        med["memory_mb"] = mem if mem is not None else memory_mb(t.device)
        self._window.clear()
        if not dist.is_main_process():
            return
        for w in t.writers:
            w.write_train(t.iter, med, epoch=t.epoch)
        logger.info(
            "epoch %d iter %d/%d  loss %.4f  %s  iter_time %.3fs  mem %.0fMB",
            t.epoch,
            t.iter,
            t.total_iters,
            med["loss"],
            " ".join(f"{k} {v:.2e}" for k, v in med.items() if k.startswith("lr_")),
            med["iter_time"],
            med["memory_mb"],
        )

    def on_stop(self, reason: str) -> None:
        self.flush()
        self.after_train()

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EvalHook(HookBase):
    """Evaluation every ``period`` epochs (iterations for iteration schedules) from epoch ``start_epoch`` on,
    and at the end of training; ``period 0`` disables it.

    ``eval_fn(tag, epoch, iteration) -> {"segm/AP": ...}`` runs on every rank (inference is distributed) and
    returns the flat metrics on rank 0 (``{}`` when the set has no ground truth). ``tag`` is ``epoch_{e}`` or
    ``iter_{i}``: the results folder under ``OUTPUT_DIR/TEST.SAVE_PATH``.
    """

    def __init__(
        self,
        eval_fn: Callable[[str, int, int], dict],
        period: int,
        start_epoch: int = 1,
        best_metric: str = "",
    ) -> None:
        self.eval_fn, self.period, self.start_epoch, self.best_metric = (
            eval_fn,
            int(period),
            start_epoch,
            best_metric,
        )
        self.new_best = False
        self._last_tag: str | None = None

    def _run(self, tag: str, epoch: int) -> None:
        t = self.trainer
        if tag == self._last_tag:
            return
        self._last_tag = tag
        metrics = self.eval_fn(tag, epoch, t.iter) or {}
        metrics = dist.all_gather_object(metrics)[0]  # rank 0's view, on every rank (for the best rule)
        if dist.is_main_process() and metrics:
            for w in t.writers:
                w.write_eval(epoch, metrics, step=t.iter)
            logger.info("eval %s: %s", tag, "  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        value = metrics.get(self.best_metric)
        if value is not None and (not t.best or value > t.best["value"]):
            t.best = {"metric": self.best_metric, "value": float(value), "tag": tag}
            self.new_best = True

    def after_epoch(self) -> None:
        t, e = self.trainer, self.trainer.completed_epoch
        if t.schedule != "epoch" or self.period <= 0 or e < self.start_epoch:
            return
        if e % self.period == 0 or e == t.max_epochs:
            self._run(f"epoch_{e}", e)

    def after_step(self) -> None:
        t = self.trainer
        if t.schedule != "iter" or self.period <= 0 or t.epoch < self.start_epoch:
            return
        if t.iter % self.period == 0 or t.iter >= t.max_iter:
            self._run(f"iter_{t.iter}", t.epoch)


class CheckpointHook(HookBase):
    """``checkpoint.pth`` (last) after every epoch (epoch schedules) or every ``period`` iterations (iteration
    schedules) and at the end; ``checkpoint_epoch_{e}.pth`` / ``checkpoint_iter_{i}.pth`` every ``period``
    (0: only last); ``checkpoint_best.pth`` when the eval hook found a new best; last also on SIGINT/SIGTERM
    and on an error in the loop (single process).

    Mid-epoch saves of last, in any schedule: every ``every_iters`` iterations and every ``every_minutes``
    minutes (rank 0's clock decides for all ranks); 0 turns each off. Resume is exact from any step.
    """

    def __init__(
        self,
        output_dir: str,
        period: int,
        config: dict,
        eval_hook: EvalHook | None = None,
        every_iters: int = 0,
        every_minutes: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.period = int(period)
        self.config = config
        self.eval_hook = eval_hook
        self.every_iters = max(0, int(every_iters))
        self.every_s = max(0.0, float(every_minutes)) * 60.0
        self.clock = clock
        self.last_saved_iter = -1
        self._last_save_time = clock()

    def save(self, names: list[str], rng_state: dict | None = None) -> None:
        state = self.trainer.state_dict(rng_state)  # collective
        if dist.is_main_process():
            state["config"] = self.config
            state["format"] = "vidseg-train-v1"
            for n in names:
                save_training_state(state, self.output_dir / n)
            logger.info(
                "saved %s (epoch %d, iter %d)", ", ".join(names), self.trainer.epoch, self.trainer.iter
            )
        self.last_saved_iter = self.trainer.iter
        self._last_save_time = self.clock()
        dist.barrier()

    def _periodic_due(self) -> bool:
        """Whether a mid-epoch save of last is due now (the same answer on every rank)."""
        t = self.trainer
        due = self.every_iters > 0 and t.iter % self.every_iters == 0
        if self.every_s > 0:
            late = dist.is_main_process() and self.clock() - self._last_save_time >= self.every_s
            if dist.is_dist():
                late = bool(dist.all_gather_object(late)[0])
            due = due or late
        return due and self.last_saved_iter != t.iter

    def before_train(self) -> None:
        self.last_saved_iter = self.trainer.iter  # the state this run started from is on disk already

    def _with_best(self, names: list[str]) -> list[str]:
        if self.eval_hook is not None and self.eval_hook.new_best:
            self.eval_hook.new_best = False
            names.append(BEST)
        return names

    def after_epoch(self) -> None:
        t = self.trainer
        if t.schedule != "epoch":
            return
        names = [LAST]
        e = t.completed_epoch
        if self.period > 0 and e % self.period == 0:
            names.append(f"checkpoint_epoch_{e}.pth")
        self.save(self._with_best(names))

    def after_step(self) -> None:
        t = self.trainer
        if t.schedule != "iter":
            if self.every_iters or self.every_s:
                if t.inner < t.batches_per_epoch and self._periodic_due():  # epoch ends save anyway
                    self.save([LAST])
            return
        names: list[str] = []
        if self.period > 0 and t.iter % self.period == 0:
            names = [LAST, f"checkpoint_iter_{t.iter}.pth"]
        elif t.iter >= t.max_iter:
            names = [LAST]
        if not names and (self.every_iters or self.every_s) and self._periodic_due():
            names = [LAST]
        if names or (self.eval_hook is not None and self.eval_hook.new_best):
            self.save(self._with_best(names or [LAST]))

    def after_train(self) -> None:
        if self.last_saved_iter != self.trainer.iter:
            self.save([LAST])

    def on_stop(self, reason: str) -> None:
        logger.warning("%s received: saving %s and stopping", reason, LAST)
        self.save([LAST])

    def on_exception(self, exc: BaseException) -> None:
        """Save last at the last finished step, so that the work since the previous checkpoint is kept (a
        missing frame, a full disk...). Not when nothing is new, not after a non-finite loss (the last
        checkpoint on disk is the last good one), not in the middle of a parameter update, and not with
        several processes (the others may wait in a collective; they stop on the launcher's timeout)."""
        from vidseg.engine.trainer import NonFiniteLossError

        t = self.trainer
        if isinstance(exc, NonFiniteLossError) or t.iter == self.last_saved_iter:
            return
        if dist.is_dist():
            logger.warning("error on rank %d: no checkpoint saved at iteration %d", dist.get_rank(), t.iter)
            return
        if t.updating or t.rng_after_last_step is None:
            logger.warning(
                "error during the parameter update of iteration %d: %s not saved", t.iter + 1, LAST
            )
            return
        try:
            self.save([LAST], rng_state={**get_rng_state(), **t.rng_after_last_step})
            logger.warning(
                "training failed after iteration %d: saved %s there; continue with --resume once the cause "
                "is fixed",
                t.iter,
                LAST,
            )
        except Exception as e:  # noqa: BLE001 - e.g. the disk is full: report the first error, not this one
            logger.warning("training failed after iteration %d; saving %s failed too: %s", t.iter, LAST, e)


def describe_best(best: dict[str, Any]) -> str:
    return f"{best['metric']} {best['value']:.2f} at {best['tag']}" if best else "none"
