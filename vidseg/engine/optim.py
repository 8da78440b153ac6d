"""AdamW with name-substring parameter groups, LR schedules (per epoch or iteration), gradient clipping."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch import nn

from vidseg.utils.param_groups import GroupSpec, freeze_matching, param_groups_by_substrings

__all__ = [
    "GroupSpec",
    "param_groups_by_substrings",
    "build_optimizer",
    "build_scheduler",
    "warmup_multistep_factor",
    "clip_gradients",
    "freeze_parameters",
]


def freeze_parameters(model: nn.Module, substrings: Sequence[str]) -> list[str]:
    """``SOLVER.FROZEN_PARAMS``: ``requires_grad False`` for parameters whose name contains any substring
    (:func:`vidseg.utils.param_groups.freeze_matching`); returns their names."""
    subs = [s for s in substrings if s]
    return freeze_matching(model, lambda name: any(s in name for s in subs))


def build_optimizer(
    param_groups: list[dict], name: str = "ADAMW", betas: Sequence[float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """AdamW (or SGD) over ``param_groups``; each group keeps its ``name``, ``lr`` and ``weight_decay``."""
    if not param_groups:
        raise ValueError("no trainable parameters (all frozen?)")
    if name.upper() == "ADAMW":
        return torch.optim.AdamW(param_groups, betas=tuple(betas))
    if name.upper() == "SGD":
        return torch.optim.SGD(param_groups, momentum=0.9)
    raise ValueError(f"SOLVER.OPTIMIZER: unknown optimizer {name!r}; known: ADAMW, SGD")


def warmup_multistep_factor(
    it: int, steps: Sequence[int], gamma: float, warmup_iters: int, warmup_factor: float
) -> float:
    """detectron2's WarmupMultiStepLR with linear warmup: the LR multiplier at iteration ``it``."""
    f = gamma ** bisect.bisect_right(sorted(steps), it)
    if it < warmup_iters:
        alpha = it / warmup_iters
        f *= warmup_factor * (1 - alpha) + alpha
    return f


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    steps: Sequence[int],
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 1.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """``"epoch"``: MultiStepLR with milestones in epochs, stepped once per epoch (DeVIS: epochs counted
    from 1, so ``STEPS [3, 7]`` gives epochs 4-7 at 0.1x). ``"iter"``: WarmupMultiStepLR stepped every
    iteration."""
    if schedule == "epoch":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(steps), gamma=gamma)
    if schedule == "iter":
        steps = list(steps)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: warmup_multistep_factor(it, steps, gamma, warmup_iters, warmup_factor)
        )
    raise ValueError(f"SOLVER.SCHEDULE: unknown schedule {schedule!r}; known: epoch, iter")


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float, mode: str = "full_model") -> float:
    """Clip by total L2 norm over all parameters (``full_model``) or per optimizer group (``per_group``).

    Returns the total norm before clipping (of the whole model, for logging). ``max_norm <= 0`` only measures.
    """
    groups = [[p for p in g["params"] if p.grad is not None] for g in optimizer.param_groups]
    all_params = [p for g in groups for p in g]
    if not all_params:
        return 0.0
    if max_norm <= 0:
        return float(torch.nn.utils.clip_grad_norm_(all_params, float("inf")))
    if mode == "full_model":
        return float(torch.nn.utils.clip_grad_norm_(all_params, max_norm))
    if mode == "per_group":
        norms = [torch.nn.utils.clip_grad_norm_(g, max_norm) for g in groups if g]
        return float(torch.stack([n.float() for n in norms]).norm())
    raise ValueError(f"SOLVER.GRAD_CLIP_TYPE: unknown mode {mode!r}; known: full_model, per_group")
