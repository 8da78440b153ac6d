"""The optimal one-to-one assignment of a cost matrix (scipy's ``linear_sum_assignment``), per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["Indices", "assign", "assign_batch"]

# One ``(pred_idx, tgt_idx)`` pair of int64 CPU tensors per image (clip matchers add a ``valid`` tensor).
Indices = list[tuple[torch.Tensor, ...]]


def assign(cost: torch.Tensor, who: str = "matcher") -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost matching of a ``[P, G]`` cost matrix.

    Returns:
        ``(rows, cols)`` int64 CPU tensors of length ``min(P, G)``; ``rows`` ascending.
    Raises:
        ValueError: the matrix has NaN or inf entries (scipy would fail with an unclear message), named with
            ``who``.
    """
    cost = cost.detach().cpu()
    if not torch.isfinite(cost).all():
        raise ValueError(f"{who}: the cost matrix has NaN/inf entries (non-finite predictions?)")
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def assign_batch(cost: torch.Tensor, sizes: Sequence[int], who: str = "matcher") -> Indices:
    """Per-image matching of one batched cost matrix.

    Args:
        cost: ``[B, Q, sum(sizes)]``: the cost of every query of every image against all targets of the batch;
            image ``b`` reads only the columns of its own ``sizes[b]`` targets.
        sizes: targets per image.
    Returns:
        B tuples ``(pred_idx, tgt_idx)``; images without targets give two empty tensors.
    """
    empty = torch.empty(0, dtype=torch.int64)
    cost = cost.detach().cpu()
    out: Indices = []
    for b, block in enumerate(cost.split(list(sizes), -1)):
        out.append(assign(block[b], who) if sizes[b] else (empty, empty))
    return out
