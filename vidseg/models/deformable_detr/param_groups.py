"""Optimizer parameter groups of Deformable DETR / DeVIS: name substrings -> learning rates (devis.md
§3.6)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["deformable_detr_param_groups", "freeze_by_name"]


def _matches(name: str, keywords: Sequence[str]) -> bool:
    return any(k in name for k in keywords)


def freeze_by_name(model: nn.Module, keywords: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name contains one of ``keywords``; returns their
    names."""
    frozen = []
    for n, p in model.named_parameters():
        if keywords and _matches(n, keywords):
            p.requires_grad_(False)
            frozen.append(n)
    return frozen


def deformable_detr_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    backbone_lr: float,
    backbone_names: Sequence[str] = ("backbone.0",),
    linear_proj_names: Sequence[str] = (
        "self_attn.sampling_offsets",
        "cross_attn.sampling_offsets",
        "reference_points",
    ),
    linear_proj_mult: float = 0.1,
    mask_head_names: Sequence[str] = ("bbox_attention", "mask_head"),
    mask_head_mult: float = 1.0,
    extra: Sequence[tuple[str, Sequence[str], float]] = (),
) -> list[dict]:
    """AdamW groups by parameter-name substring, in DeVIS's order.

    Groups: ``base`` (everything else, ``base_lr``), ``backbone`` (``backbone_lr``), ``linear_proj``
    (``base_lr * linear_proj_mult``), ``mask_head`` (``base_lr * mask_head_mult``), then ``extra`` groups
    ``(name, substrings, lr_mult)`` (e.g. DeVIS's temporal sampling offsets). A parameter joins the first
    group
    whose substrings it matches (the official code would put it in two and fail). Frozen parameters are left
    out;
    empty groups are dropped.

    Returns:
        ``[{"name", "params", "lr", "weight_decay"}]``.
    """
    specs = [
        ("backbone", list(backbone_names), backbone_lr),
        ("linear_proj", list(linear_proj_names), base_lr * linear_proj_mult),
        ("mask_head", list(mask_head_names), base_lr * mask_head_mult),
        *[(name, list(keys), base_lr * mult) for name, keys, mult in extra],
    ]
    groups: dict[str, dict] = {
        "base": {"name": "base", "params": [], "lr": base_lr, "weight_decay": weight_decay}
    }
    for name, _, lr in specs:
        groups[name] = {"name": name, "params": [], "lr": lr, "weight_decay": weight_decay}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        target = next((name for name, keys, _ in specs if _matches(n, keys)), "base")
        groups[target]["params"].append(p)
    return [g for g in groups.values() if g["params"]]
