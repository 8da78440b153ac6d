"""GenVIS's query memory, carried from step to step of one video (``USE_MEM``, grattvis.md §3.5).

The four projections are Linear layers of the head (official keys
``vita_module.pre_{query,memory}_embed_{k,v}``); this file holds the per-video store and the read:

- write, after each step: ``k_m, v_m = pre_memory_embed_k/v(decoder_norm(final output))``, one entry per step,
  never pruned, never detached (gradients flow back through every stored step in training);
- read, before decoding, with the propagated query ``o`` and ``k_q, v_q = pre_query_embed_k/v(o)``: each query
  slot attends over the past steps of *its own slot* only, with a softmax of plain dot products (no
  ``1/sqrt(C)``): ``r[q] = sum_m softmax_m(<k_q[q], K[m, q]>) V[m, q]``, and ``o <- o + v_q + r``. With no
  entries ``r = 0``, so the first step still adds ``v_q``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["QueryMemory", "NoMemory", "read_own_slot"]


def read_own_slot(k_q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """The memory read of every query slot over the same slot's past entries.

    Args:
        k_q: query keys ``[cQ, N, C]`` (N = L*B batch items).
        keys: stored keys ``[M, N, cQ, C]``.
        values: stored values ``[M, N, cQ, C]``.
    Returns:
        ``r`` ``[cQ, N, C]``; zeros when ``M == 0``.
    """
    if keys.shape[0] == 0:
        return torch.zeros_like(k_q)
    scores = torch.einsum("qnc,mnqc->nqm", k_q, keys)  # [N, cQ, M], no sqrt(C) scaling (official)
    weights = scores.softmax(dim=-1)
    return torch.einsum("nqm,mnqc->qnc", weights, values)


class QueryMemory:
    """The memory of one video: a growing list of ``(k_m, v_m)`` entries, one per step.

    ``append`` takes ``[N, cQ, C]`` or ``[L, B, cQ, C]`` (flattened to ``N = L*B``); ``read(k_q [cQ, N, C])``
    returns ``r [cQ, N, C]``; ``len`` is the number of stored steps. Entries keep their autograd graph.
    """

    enabled = True

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, k_m: Tensor, v_m: Tensor) -> None:
        """Store one step's memory keys and values (``[N, cQ, C]`` or ``[L, B, cQ, C]``)."""
        if k_m.shape != v_m.shape:
            raise ValueError(
                f"QueryMemory.append: keys {tuple(k_m.shape)} and values {tuple(v_m.shape)} differ"
            )
        if k_m.dim() == 4:
            k_m, v_m = k_m.flatten(0, 1), v_m.flatten(0, 1)
        if k_m.dim() != 3:
            raise ValueError(
                f"QueryMemory.append: expected [N, cQ, C] or [L, B, cQ, C], got {tuple(k_m.shape)}"
            )
        if self.keys and k_m.shape != self.keys[0].shape:
            raise ValueError(
                f"QueryMemory.append: entry {tuple(k_m.shape)} does not match the stored "
                f"{tuple(self.keys[0].shape)}"
            )
        self.keys.append(k_m)
        self.values.append(v_m)

    def read(self, k_q: Tensor) -> Tensor:
        """``r [cQ, N, C]`` for the query keys ``k_q [cQ, N, C]`` (zeros while the memory is empty)."""
        if not self.keys:
            return torch.zeros_like(k_q)
        cq, n, c = k_q.shape
        if self.keys[0].shape != (n, cq, c):
            raise ValueError(
                f"QueryMemory.read: query keys {tuple(k_q.shape)} do not fit the stored entries "
                f"{tuple(self.keys[0].shape)} ([N, cQ, C])"
            )
        return read_own_slot(k_q, torch.stack(self.keys), torch.stack(self.values))


class NoMemory(QueryMemory):
    """The memory of a head without ``USE_MEM``: stores nothing, reads zeros, has length 0."""

    enabled = False

    def append(self, k_m: Tensor, v_m: Tensor) -> None:
        """Ignore the entry (there is no memory)."""
