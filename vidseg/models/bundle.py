"""What a method hands the engine: :class:`ModelBundle`, and the class-count rule every builder shares.

The engine only ever sees a :class:`ModelBundle`:

- ``model(batch: ClipBatch) -> dict`` (``pred_logits``, ``pred_masks``, ...);
- ``criterion(outputs, batch.targets) -> dict[str, Tensor]`` of *unweighted* losses, with
  ``criterion.weight_dict``; the total loss is ``sum(weight_dict[k] * losses[k] for k in losses if k in
  weight_dict)``;
- ``inference(model, video) -> VideoResult`` for one test video (an item of the test dataset);
- ``param_groups(model) -> list[dict]`` optional optimizer groups; ``None`` uses the engine's name-substring
  groups from ``SOLVER.PARAM_GROUP_*``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

__all__ = ["LazyMetadata", "ModelBundle", "num_classes_from"]


class Inference(Protocol):
    def __call__(self, model: nn.Module, video: Any) -> Any: ...


@dataclass
class ModelBundle:
    """What a method hands the engine.

    Attributes:
        model: the network; ``model(batch)`` returns the outputs dict.
        criterion: ``criterion(outputs, targets) -> {loss_name: scalar tensor}`` (unweighted), with
            ``weight_dict``.
        inference: ``inference(model, video) -> VideoResult``.
        param_groups: optional ``fn(model) -> [{"params", "lr", "weight_decay", "name"}]``.
    """

    model: nn.Module
    criterion: nn.Module
    inference: Inference
    param_groups: Callable[[nn.Module], list[dict]] | None = None


class LazyMetadata:
    """Dataset metadata read on first use: a builder whose config already gives the class count never loads
    the dataset (which can be large, or absent on a machine that only predicts).

    Args:
        load: ``() -> metadata`` (e.g. ``lambda: get_dataset_metadata(name, cfg)``).
    """

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._value: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._value is None:
            self._value = self._load()
        return getattr(self._value, name)


def num_classes_from(configured: int, metadata: Any, key: str) -> int:
    """``configured`` when > 0, else the class count of the dataset ``metadata``.

    Raises:
        ValueError: both are missing; the message names the config ``key`` to set.
    """
    if int(configured) > 0:
        return int(configured)
    if metadata is None:
        raise ValueError(f"{key} is 0 and DATASETS.TRAIN/TEST are empty: set one of them")
    k = int(getattr(metadata, "num_classes", 0) or 0)
    if k <= 0:
        raise ValueError(
            f"{key} is 0 and the metadata of {getattr(metadata, 'name', '?')!r} lists no classes"
        )
    return k
