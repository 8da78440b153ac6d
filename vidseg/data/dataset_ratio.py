"""Ratio-weighted mixing of training datasets (``DATASETS.DATASET_RATIO``, VITA / GenVIS / GRAtt-VIS).

VITA's ``CombinedDataLoader`` draws the source of every batch element with ``random.choices`` weighted by
the ratios, then takes that source's next element from its own endless shuffled stream. For OVIS, ``[1.0,
0.25]`` over ``("coco2ovis_train", "ovis_train")`` gives 80% COCO pseudo-videos and 20% OVIS clips,
whatever the sizes of the two sets.

:class:`RatioMixedDataset` is the same draw as a map-style dataset, so that the engine's resumable sampler
and exact resume work unchanged: item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``. Per epoch,
the source of each of the ``len`` positions is drawn with the ratios, and each source's positions take its
items in the order of a fresh permutation (a new one each time the source's items are used up). An item used
for the r-th time in an epoch gets its own random draws (frames, augmentation) through the dataset's
``draw(i, r)`` where it has one (:class:`~vidseg.data.clip_dataset.ClipTrainDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vidseg.data.errors import DatasetError

__all__ = ["RatioMixedDataset", "check_dataset_ratio"]


def check_dataset_ratio(ratio: Sequence[float], names: Sequence[str]) -> list[float]:
    """``DATASETS.DATASET_RATIO`` as floats, or a one-line :class:`DatasetError` naming the key: one weight
    per ``DATASETS.TRAIN`` name, none negative, not all zero."""
    ratio = [float(r) for r in ratio]
    if len(ratio) != len(names):
        raise DatasetError(
            f"DATASETS.DATASET_RATIO {ratio} has {len(ratio)} weights for {len(names)} DATASETS.TRAIN "
            f"names {list(names)}: give one weight per dataset"
        )
    if any(r < 0 for r in ratio) or not sum(ratio) > 0:
        raise DatasetError(f"DATASETS.DATASET_RATIO {ratio}: weights must be >= 0 and not all 0")
    return ratio


class RatioMixedDataset(Dataset):
    """Several training datasets, each batch element drawn from dataset ``k`` with probability
    ``ratio[k] / sum(ratio)``.

    Args:
        datasets: map-style datasets in one label space (``set_epoch`` is passed on when they have it).
        ratio: one non-negative weight per dataset.
        length: positions per epoch; default the sum of the datasets' lengths.
        seed: the run seed.

    ``self[i]`` is ``datasets[k].draw(j, r)`` (else ``datasets[k][j]``) with ``(k, j, r) = self.source(i)``.
    """

    def __init__(
        self, datasets: Sequence[Dataset], ratio: Sequence[float], length: int | None = None, seed: int = 0
    ) -> None:
        if len(datasets) != len(ratio):
            raise ValueError(f"{len(datasets)} datasets but {len(ratio)} ratios")
        sizes = [len(d) for d in datasets]
        ratio = [float(r) for r in ratio]
        for d_len, r in zip(sizes, ratio):
            if r > 0 and d_len == 0:
                raise DatasetError("DATASETS.DATASET_RATIO gives a weight to an empty dataset")
        self.datasets = list(datasets)
        self.sizes = sizes
        p = np.asarray(ratio, dtype=np.float64)
        self.probs = p / p.sum()
        self.length = int(length if length is not None else sum(sizes))
        self.seed = int(seed)
        self.epoch = 0
        self._plan_epoch: int | None = None
        self._plan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the draw of sources and the per-source orders follow from it)."""
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def _epoch_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Computed lazily in each process (DataLoader workers get a copy of the dataset): cheap, O(length).
        if self._plan_epoch != self.epoch or self._plan is None:
            rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
            src = rng.choice(len(self.datasets), size=self.length, p=self.probs)
            idx = np.zeros(self.length, dtype=np.int64)
            rep = np.zeros(self.length, dtype=np.int64)
            for k, n in enumerate(self.sizes):
                where = np.flatnonzero(src == k)
                if not len(where):
                    continue
                reps = -(-len(where) // n)
                order = np.concatenate([rng.permutation(n) for _ in range(reps)])
                idx[where] = order[: len(where)]
                rep[where] = np.arange(len(where)) // n
            self._plan, self._plan_epoch = (src, idx, rep), self.epoch
        return self._plan

    def source(self, i: int) -> tuple[int, int, int]:
        """``(dataset index, item index, repeat)`` of position ``i`` in the current epoch: ``repeat`` counts
        the earlier uses of that item in the epoch."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        src, idx, rep = self._epoch_plan()
        return int(src[i]), int(idx[i]), int(rep[i])

    def __getitem__(self, i: int) -> Any:
        k, j, r = self.source(i)
        d = self.datasets[k]
        return d.draw(j, r) if hasattr(d, "draw") else d[j]
