"""Optimizer parameter groups of Deformable DETR / DeVIS: name substrings -> learning rates (devis §3.6)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vidseg.utils.param_groups import GroupSpec, param_groups_by_substrings

__all__ = ["deformable_detr_param_groups"]


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

    Groups: ``base`` (everything else, ``base_lr``), ``backbone`` (``backbone_lr``, absolute), ``linear_proj``
    (``base_lr * linear_proj_mult``), ``mask_head`` (``base_lr * mask_head_mult``), then ``extra`` groups
    ``(name, substrings, lr_mult)`` (e.g. DeVIS's temporal sampling offsets); the rules of
    :func:`vidseg.utils.param_groups.param_groups_by_substrings` apply.

    Returns:
        ``[{"name", "params", "lr", "weight_decay"}]``.
    """
    specs = [
        GroupSpec("backbone", list(backbone_names), lr=backbone_lr),
        GroupSpec("linear_proj", list(linear_proj_names), linear_proj_mult),
        GroupSpec("mask_head", list(mask_head_names), mask_head_mult),
        *[GroupSpec(name, list(keys), mult) for name, keys, mult in extra],
    ]
    return param_groups_by_substrings(model, base_lr, weight_decay, specs)
