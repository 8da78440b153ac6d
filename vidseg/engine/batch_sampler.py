"""A resumable distributed batch sampler: the order of an epoch is a function of (seed, epoch) only.

A position is ``(epoch, index)`` with ``index`` the number of batches this rank has already consumed in the
epoch, so a checkpoint taken mid-epoch resumes on exactly the next batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices for one rank.

    Every rank draws the same permutation of ``range(size)`` from ``(seed, epoch)``, takes every
    ``world_size``-th element starting at ``rank``, and drops the tail so that all ranks run the same
    number of batches (DeVIS: ``DistributedSampler`` + ``BatchSampler(drop_last=True)``).

    Args:
        size: dataset length.
        batch_size: clips per rank and step.
        world_size, rank: the process group layout.
        seed: the run seed (not the per-rank seed).
        shuffle: False keeps the dataset order.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if size < batch_size * world_size:
            raise ValueError(
                f"dataset has {size} clips, fewer than one global batch ({batch_size} x {world_size} ranks)"
            )
        self.size, self.batch_size, self.world_size, self.rank = size, batch_size, world_size, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and skip its first ``start`` batches (the resume position)."""
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"sampler position {start} outside 0..{self.batches_per_epoch}")
        self.epoch, self.start = epoch, start

    def epoch_indices(self, epoch: int) -> list[int]:
        """All indices of this rank for ``epoch``, in order (``batches_per_epoch * batch_size`` of them)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
            perm = torch.randperm(self.size, generator=g).tolist()
        else:
            perm = list(range(self.size))
        mine = perm[self.rank :: self.world_size]
        return mine[: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.epoch_indices(self.epoch)
        for b in range(self.start, self.batches_per_epoch):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start
