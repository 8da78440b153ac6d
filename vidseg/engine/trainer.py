"""The one explicit training loop, with a small hook protocol.

Per epoch: ``dataset.set_epoch(e)``, the resumable sampler picks up at its position, and every step runs
``outputs = model(batch)``, ``losses = criterion(outputs, batch.targets)``, ``total = sum(w[k] * losses[k])``,
backward (with a grad scaler for fp16), clipping, ``optimizer.step()``. Epoch schedules step the LR scheduler
after each epoch, iteration schedules after each step.

Hooks (``HookBase``): ``before_train``, ``after_train``, ``before_step``, ``after_step``, ``after_epoch`` and
``on_stop(reason)`` (SIGINT/SIGTERM: save and leave), ``on_exception(exc)`` (any error in the loop, e.g. a
missing frame or a full disk: save what can be resumed, then the error goes on). A non-finite loss raises
:class:`NonFiniteLossError` naming the term, before any parameter is touched, so the last checkpoint on disk
stays the last good one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DataLoader

from vidseg.engine.batch_sampler import ResumableBatchSampler
from vidseg.engine.optim import clip_gradients
from vidseg.engine.training_state import get_rng_state, set_rng_state
from vidseg.utils import dist
from vidseg.utils.threads import dataloader_worker_init

__all__ = ["HookBase", "Trainer", "NonFiniteLossError"]


def _plain(state: dict) -> dict:
    """Scheduler state with plain containers only (MultiStepLR keeps a ``Counter``), so that checkpoints pass
    the allow-list of ``vidseg.checkpoints`` safe loading."""
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in state.items()}


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; the message names it."""


class HookBase:
    """Override any of these; ``self.trainer`` is set by :meth:`Trainer.register_hooks`."""

    trainer: Trainer

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def on_stop(self, reason: str) -> None: ...

    def on_exception(self, exc: BaseException) -> None: ...


class Trainer:
    """Runs the loop; owns the counters that a checkpoint captures.

    Args:
        model: the network (wrapped in DistributedDataParallel here when a process group is up).
        criterion: ``criterion(outputs, targets) -> {name: loss}`` with ``weight_dict``.
        optimizer, scheduler: from :mod:`vidseg.engine.optim`.
        dataset: map-style; ``set_epoch(epoch)`` is called when present. ``collate_fn`` makes a ``ClipBatch``.
        sampler: the :class:`ResumableBatchSampler` of this rank.
        schedule: ``"epoch"`` (``max_epochs``) or ``"iter"`` (``max_iter``; epochs are passes over the data).
        device: where the step runs.
        grad_clip / grad_clip_type: total-norm clipping (``<= 0`` off), ``full_model`` or ``per_group``.
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` to autocast (on the model's device), None for fp32.
        num_workers: DataLoader workers.
        seed: the run seed; also seeds the DataLoader's own generator per epoch.
        find_unused_parameters: passed to DistributedDataParallel.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        dataset: Any,
        collate_fn: Callable,
        sampler: ResumableBatchSampler,
        *,
        schedule: str = "epoch",
        max_epochs: int = 1,
        max_iter: int = 0,
        device: torch.device | str = "cpu",
        grad_clip: float = 0.0,
        grad_clip_type: str = "full_model",
        amp_dtype: torch.dtype | None = None,
        num_workers: int = 0,
        seed: int = 0,
        find_unused_parameters: bool = False,
    ) -> None:
        if schedule not in ("epoch", "iter"):
            raise ValueError(f"schedule must be 'epoch' or 'iter', got {schedule!r}")
        if schedule == "iter" and max_iter <= 0:
            raise ValueError("SOLVER.SCHEDULE iter needs SOLVER.MAX_ITER > 0")
        if schedule == "epoch" and max_epochs <= 0:
            raise ValueError("SOLVER.SCHEDULE epoch needs SOLVER.EPOCHS > 0")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.criterion = criterion.to(self.device)
        self.ddp_model: nn.Module = self.model
        if dist.get_world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=find_unused_parameters
            )
        self.optimizer, self.scheduler = optimizer, scheduler
        self.dataset, self.collate_fn, self.sampler = dataset, collate_fn, sampler
        self.schedule, self.max_epochs, self.max_iter = schedule, max_epochs, max_iter
        self.grad_clip, self.grad_clip_type = grad_clip, grad_clip_type
        self.amp_dtype = amp_dtype
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type) if amp_dtype == torch.float16 else None
        self.num_workers, self.seed = num_workers, seed
        self.hooks: list[HookBase] = []
        self.writers: list[Any] = []  # rank 0: metric writers shared by the hooks
        # Counters (what a checkpoint captures).
        self.epoch = 1  # epoch in progress (1-based)
        self.iter = 0  # optimizer steps done
        self.inner = 0  # batches of `epoch` done by this rank
        self.completed_epoch = 0
        self.best: dict[str, Any] = {}
        # Per-step results for hooks.
        self.step_losses: dict[str, float] = {}
        self.step_time = 0.0
        self.data_time = 0.0
        self.grad_norm = 0.0
        self.stop_reason: str | None = None
        # What an error in the loop may save: the RNG state after the last finished step, and whether the
        # failing step had started to change the parameters (then the state is no step's state).
        self.rng_after_last_step: dict | None = None
        self.updating = False

    # ------------------------------------------------------------------ hooks and state
    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def _call(self, name: str, *args: Any) -> None:
        for h in self.hooks:
            getattr(h, name)(*args)

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    @property
    def total_iters(self) -> int:
        return self.max_iter if self.schedule == "iter" else self.max_epochs * self.batches_per_epoch

    def state_dict(self, rng_state: dict | None = None) -> dict:
        """Checkpoint contents (collective: every rank must call it, for the RNG states). ``rng_state``: this
        rank's RNG state to store instead of the current one."""
        rng = dist.all_gather_object(rng_state if rng_state is not None else get_rng_state())
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": _plain(self.scheduler.state_dict()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "iter": self.iter,
            "sampler": {"epoch": self.epoch, "index": self.inner, "seed": self.sampler.seed},
            "rng": rng,
            "world_size": dist.get_world_size(),
            "best": dict(self.best),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        """Continue exactly from ``ckpt`` (see :mod:`vidseg.engine.training_state` for the keys)."""
        missing = [
            k for k in ("model", "optimizer", "scheduler", "epoch", "iter", "sampler", "rng") if k not in ckpt
        ]
        if missing:
            raise KeyError(f"checkpoint lacks {missing}: not a vidseg training checkpoint")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        sched = dict(ckpt["scheduler"])
        if isinstance(sched.get("milestones"), dict):  # MultiStepLR counts milestones in a Counter
            sched["milestones"] = Counter(sched["milestones"])
        self.scheduler.load_state_dict(sched)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.iter = int(ckpt["epoch"]), int(ckpt["iter"])
        self.inner = int(ckpt["sampler"]["index"])
        self.completed_epoch = self.epoch - 1
        self.best = dict(ckpt.get("best") or {})
        rng = ckpt["rng"]
        if isinstance(rng, list):
            if len(rng) == dist.get_world_size():
                rng = rng[dist.get_rank()]
            else:  # another world size: the data order is still exact, the per-rank RNG streams cannot be
                rng = rng[0] if dist.get_rank() == 0 else None
        if rng is not None:
            set_rng_state(rng)

    # ------------------------------------------------------------------ loop
    def _done(self) -> bool:
        if self.schedule == "iter":
            return self.iter >= self.max_iter
        return self.epoch > self.max_epochs

    def _loader(self) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, self.inner)
        # A private generator: creating the iterator must not consume the global torch RNG, or a run resumed
        # mid-epoch would diverge from an uninterrupted one.
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            worker_init_fn=dataloader_worker_init if self.num_workers else None,
            generator=g,
            pin_memory=self.device.type == "cuda",
        )

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: Any) -> None:
            if self.stop_reason is not None:
                if signum == signal.SIGINT:  # Ctrl-C twice: leave now, without saving
                    raise KeyboardInterrupt
                return  # a repeated SIGTERM (cluster schedulers send several) changes nothing
            self.stop_reason = signal.Signals(signum).name

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _stop_agreed(self) -> bool:
        """All ranks stop at the same step when any of them got a signal."""
        flag = self.stop_reason is not None
        if dist.is_dist():
            t = torch.tensor([int(flag)], device=self._reduce_device())
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
            flag = bool(t.item())
            if flag and self.stop_reason is None:
                self.stop_reason = "signal on another rank"
        return flag

    def _reduce_device(self) -> torch.device:
        return self.device if tdist.get_backend() == "nccl" else torch.device("cpu")

    def train(self) -> str | None:
        """Run to the end of the schedule, or until a signal. Returns the stop reason (None when finished)."""
        old = self._install_signals()
        try:
            self._call("before_train")
            if self._loop():
                return self.stop_reason
            self._call("after_train")
            return None
        except Exception as e:
            self._call("on_exception", e)
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _snapshot_rng(self) -> None:
        """The torch RNG states after the last finished step, for a checkpoint saved after an error in the
        next step (whose forward may have drawn dropout masks). Python's and numpy's generators are not used
        by a step (the data pipeline draws from its own generators) and are read at saving time: copying them
        every step costs ~0.1 ms, the torch states ~1 us. Single process only: after an error one rank
        saves, the others may be blocked in a collective (see CheckpointHook.on_exception)."""
        if dist.is_dist():
            self.rng_after_last_step = None
            return
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        self.rng_after_last_step = state

    def _loop(self) -> bool:
        """The epochs and steps; True when stopped by a signal."""
        self._snapshot_rng()
        while not self._done():
            t_prev = time.perf_counter()
            for batch in self._loader():
                self.data_time = time.perf_counter() - t_prev
                self._call("before_step")
                self.run_step(batch)
                self.iter += 1
                self.inner += 1
                self.updating = False
                self._snapshot_rng()
                self._call("after_step")
                if self._stop_agreed():
                    self._call("on_stop", self.stop_reason)
                    return True
                if self.schedule == "iter" and self.iter >= self.max_iter:
                    break
                t_prev = time.perf_counter()
            if self.inner >= self.batches_per_epoch:
                self.completed_epoch = self.epoch
                if self.schedule == "epoch":
                    self.scheduler.step()
                self.epoch += 1
                self.inner = 0
                self._call("after_epoch")
        return False

    def _batch_time_start(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def run_step(self, batch: Any) -> None:
        """One optimizer step on ``batch`` (a ``ClipBatch``); fills ``step_losses``."""
        t0 = self._batch_time_start()
        self.ddp_model.train()
        self.criterion.train()
        batch = batch.to(self.device, non_blocking=True)
        amp = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with amp:
            outputs = self.ddp_model(batch)
            losses = self.criterion(outputs, batch.targets)
        wd = self.criterion.weight_dict
        scaled = {k: losses[k].float() * wd[k] for k in losses if k in wd}
        if not scaled:
            raise KeyError(f"no loss term of {sorted(losses)} has a weight in criterion.weight_dict")
        total = sum(scaled.values())
        self._check_finite(losses, total)
        self.optimizer.zero_grad(set_to_none=True)
        self.updating = True  # from here until the counters move, the state is between two steps
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)  # clipping sees true gradients
            self.grad_norm = clip_gradients(self.optimizer, self.grad_clip, self.grad_clip_type)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.grad_norm = clip_gradients(self.optimizer, self.grad_clip, self.grad_clip_type)
            self.optimizer.step()
        if self.schedule == "iter":
            self.scheduler.step()
        rec = {"loss": float(total.detach()), "grad_norm": self.grad_norm}
        rec.update({k: float(v.detach()) for k, v in scaled.items()})
        rec.update({f"{k}_unscaled": float(v.detach()) for k, v in losses.items()})
        self.step_losses = rec
        self.step_time = self._batch_time_start() - t0 + self.data_time

    def _check_finite(self, losses: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v.detach()).all()}
        finite = bool(torch.isfinite(total.detach())) and not bad
        if dist.is_dist():  # every rank must stop together, or the others hang in backward
            t = torch.tensor([int(not finite)], device=self._reduce_device())
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
            finite = not bool(t.item())
        if finite:
            return
        terms = ", ".join(f"{k}={v}" for k, v in bad.items()) or "on another rank"
        raise NonFiniteLossError(
            f"non-finite loss at iteration {self.iter + 1} (epoch {self.epoch}): {terms}; "
            "training stopped and the last checkpoint on disk is kept"
        )

    def lrs(self) -> dict[str, float]:
        """``{"lr_<group name>": lr}`` of the optimizer groups (``lr_group{i}`` when unnamed)."""
        out = {}
        for i, g in enumerate(self.optimizer.param_groups):
            out[f"lr_{g.get('name', f'group{i}')}"] = float(g["lr"])
        return out
