"""Optimizer parameter groups by parameter-name substring: the one implementation that the engine's
``SOLVER.PARAM_GROUP_*`` groups and the methods' own group tables (DeVIS's) both use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["GroupSpec", "freeze_matching", "param_groups_by_substrings"]


@dataclass
class GroupSpec:
    """Parameters whose name contains any of ``substrings`` join this group.

    Its learning rate is ``lr`` when given (DeVIS's absolute backbone LR), else ``base_lr * lr_mult``; its
    weight decay is ``weight_decay`` when given and >= 0, else the base one.
    """

    name: str
    substrings: Sequence[str]
    lr_mult: float = 1.0
    weight_decay: float | None = None
    lr: float | None = None


def param_groups_by_substrings(
    model: nn.Module, base_lr: float, weight_decay: float, groups: Sequence[GroupSpec] = ()
) -> list[dict]:
    """Optimizer groups ``[{"name", "params", "lr", "weight_decay"}]``, ``"base"`` first, then ``groups``.

    A parameter joins the first spec whose substrings it matches (the official DeVIS code would put it in two
    and fail); the others form ``"base"``. Frozen parameters (``requires_grad False``) are left out, and empty
    groups are dropped.
    """
    buckets: dict[str, list[nn.Parameter]] = {g.name: [] for g in groups}
    base: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        for g in groups:
            if any(s in name for s in g.substrings):
                buckets[g.name].append(p)
                break
        else:
            base.append(p)
    out = [{"name": "base", "params": base, "lr": base_lr, "weight_decay": weight_decay}]
    for g in groups:
        wd = weight_decay if g.weight_decay is None or g.weight_decay < 0 else g.weight_decay
        lr = g.lr if g.lr is not None else base_lr * g.lr_mult
        out.append({"name": g.name, "params": buckets[g.name], "lr": lr, "weight_decay": wd})
    return [g for g in out if g["params"]]


def freeze_matching(model: nn.Module, match: Callable[[str], bool]) -> list[str]:
    """``requires_grad False`` for the parameters whose name ``match``es; returns their names.

    The one freezing of vidseg: the engine's ``SOLVER.FROZEN_PARAMS`` (name substrings) and the backbones'
    stage freezing (name prefixes, detectron2's ``FREEZE_AT``) both call it.
    """
    frozen = []
    for name, p in model.named_parameters():
        if match(name):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen

