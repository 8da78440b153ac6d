"""The model plug-in interface: a method registers ``build(cfg) -> ModelBundle`` under its META_ARCHITECTURE.

The engine only ever sees a :class:`ModelBundle`:

- ``model(batch: ClipBatch) -> dict`` (``pred_logits``, ``pred_masks``, ...);
- ``criterion(outputs, batch.targets) -> dict[str, Tensor]`` of *unweighted* losses, with
  ``criterion.weight_dict``;
  the total loss is ``sum(weight_dict[k] * losses[k] for k in losses if k in weight_dict)``;
- ``inference(model, video) -> VideoResult`` for one test video (an item of the test dataset);
- ``param_groups(model) -> list[dict]`` optional optimizer groups; ``None`` uses the engine's name-substring
  groups from ``SOLVER.PARAM_GROUPS``.

Builders are found through an explicit name -> module table (no import hooks): ``build_model`` imports the
module that registers the requested method, so a method's heavy imports happen only when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

__all__ = [
    "ModelBundle",
    "Registry",
    "META_ARCH_REGISTRY",
    "METHOD_MODULES",
    "build_model",
    "register_method",
]


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


class Registry:
    """A name -> builder table with a decorator and clear errors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            if name in self._items and self._items[name] is not fn:
                raise KeyError(f"{self.name}: {name!r} is already registered")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise KeyError(f"{self.name}: unknown name {name!r}; registered: {sorted(self._items)}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)


META_ARCH_REGISTRY = Registry("META_ARCH_REGISTRY")

# META_ARCHITECTURE -> module whose import registers its builder. Add one line when a method lands.
METHOD_MODULES: dict[str, str] = {
    "ToyVIS": "vidseg.models.toy.build",
    "DeformableDETRSegm": "vidseg.models.deformable_detr.build",
}


def register_method(name: str) -> Callable[[Callable], Callable]:
    """Decorator for ``build(cfg) -> ModelBundle``."""
    return META_ARCH_REGISTRY.register(name)


def build_model(cfg: Any) -> ModelBundle:
    """Build the bundle of ``cfg.MODEL.META_ARCHITECTURE``.

    Raises:
        KeyError: the method is unknown or its module does not register it.
    """
    name = cfg.MODEL.META_ARCHITECTURE
    if not name:
        raise KeyError(
            "MODEL.META_ARCHITECTURE is empty; set it in the config (e.g. ToyVIS, DeVIS, GRAttVIS)"
        )
    if name not in META_ARCH_REGISTRY and name in METHOD_MODULES:
        importlib.import_module(METHOD_MODULES[name])
    if name not in META_ARCH_REGISTRY:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE: no model registered as {name!r}; "
            f"known: {sorted(set(METHOD_MODULES) | set(META_ARCH_REGISTRY.names()))}"
        )
    bundle = META_ARCH_REGISTRY.get(name)(cfg)
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"the builder of {name!r} returned {type(bundle).__name__}, expected ModelBundle")
    if not hasattr(bundle.criterion, "weight_dict"):
        raise TypeError(f"the criterion of {name!r} has no weight_dict")
    return bundle
