"""The models, one sub-package per paper, and ``METHODS``: the one table of the methods a config can name.

Layout:

- ``set_prediction/``: what every DETR-family method shares (Hungarian assignment, costs, losses, the
  ``SetCriterion``, point sampling); constructors only.
- ``deformable_detr/``: the Deformable DETR detector.
- ``devis/``: DeVIS: the image stage (Deformable DETR + multi-scale mask head), its clip matcher, criterion,
  post-processing and builders; the video model and the tracker land here.
- ``mask2former/``: the per-frame detector of GRAtt-VIS.
- ``grattvis/``: the GRAtt-VIS online VIS head, which *has* a Mask2Former.
- ``toy/``: a seconds-fast VIS model for tests and the quickstart.

Each entry of :data:`METHODS` names a module with ``add_config(cfg)`` (adds the method's keys, chaining to the
keys of the parts it is built from, detectron2-style) and ``build(cfg, metadata) -> ModelBundle``. The module
is imported only when its method is used. A new method adds one line here; the parametrised tests in
``tests/models_common`` then run it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METHODS",
    "METHOD_ALIASES",
    "Method",
    "add_method_config",
    "build_model",
    "config_from_dict",
    "get_cfg",
    "load_config",
    "method_names",
]


@dataclass(frozen=True)
class Method:
    """Where a method lives: ``module`` and the names of its ``add_config`` and ``build`` functions.

    ``tiny_config`` is a shipped config (relative to ``vidseg/configs``) of a CPU-seconds instance of the
    method, used by the tests every method gets (``tests/models_common``) and by smoke runs; None: the
    method's defaults are already that small.
    """

    module: str
    add_config: str = "add_config"
    build: str = "build"
    tiny_config: str | None = None

    def resolve(self, attr: str):
        fn = getattr(importlib.import_module(self.module), getattr(self, attr), None)
        if fn is None:
            raise ImportError(f"{self.module} has no {getattr(self, attr)!r} (models.METHODS)")
        return fn


# MODEL.META_ARCHITECTURE -> the method. One line per method.
METHODS: dict[str, Method] = {
    "ToyVIS": Method("vidseg.models.toy"),
    "DeformableDETRSegm": Method(
        "vidseg.models.devis",
        "add_image_stage_config",
        "build_image_stage",
        tiny_config="quickstart/deformable_mask_head_tiny.yaml",
    ),
    "DeVIS": Method(
        "vidseg.models.devis", "add_devis_config", "build_devis", tiny_config="quickstart/devis_tiny.yaml"
    ),
    "Mask2Former": Method(
        "vidseg.models.mask2former",
        "add_mask2former_config",
        "build_mask2former_bundle",
        tiny_config="quickstart/mask2former_tiny.yaml",
    ),
    "GRAttVIS": Method(
        "vidseg.models.grattvis",
        "add_grattvis_config",
        "build_grattvis",
        tiny_config="quickstart/grattvis_tiny.yaml",
    ),
}

# Other spellings of a method, as official configs write them: the GRAtt-VIS files say ``Grattvis`` (an
# earlier commit ``Genvis``).
METHOD_ALIASES: dict[str, str] = {"Grattvis": "GRAttVIS", "Genvis": "GRAttVIS"}


def method_names() -> list[str]:
    """The registered ``MODEL.META_ARCHITECTURE`` names, sorted."""
    return sorted(METHODS)


def _method(name: str) -> Method:
    if not name:
        raise KeyError(f"MODEL.META_ARCHITECTURE is empty; set it in the config (one of {method_names()})")
    name = METHOD_ALIASES.get(name, name)
    if name not in METHODS:
        raise KeyError(f"MODEL.META_ARCHITECTURE: unknown method {name!r}; known: {method_names()}")
    return METHODS[name]


def add_method_config(cfg: Any, name: str) -> None:
    """Add the keys of method ``name`` to ``cfg`` in place (the extender ``vidseg.config.load_config`` takes).

    Raises:
        KeyError: unknown method.
    """
    _method(name).resolve("add_config")(cfg)


def get_cfg(meta_architecture: str | None = None):
    """The common defaults plus the keys of ``meta_architecture`` (:func:`vidseg.config.get_cfg` with
    :func:`add_method_config`)."""
    from vidseg import config

    return config.get_cfg(meta_architecture, add_method_config)


def load_config(config_file: Any = None, opts: Any = (), freeze: bool = True):
    """A config file (``_BASE_`` chain) plus ``KEY VALUE`` overrides, with the keys of the method it names
    (:func:`vidseg.config.load_config` with :func:`add_method_config`)."""
    from vidseg import config

    return config.load_config(config_file, opts, freeze, add_method_config)


def config_from_dict(data: dict):
    """A config from the plain dict a checkpoint stores (:func:`vidseg.config.config_from_dict`)."""
    from vidseg import config

    return config.config_from_dict(data, add_method_config)


def build_model(cfg: Any, metadata: Any = None):
    """The :class:`ModelBundle` of ``cfg.MODEL.META_ARCHITECTURE``.

    Args:
        metadata: the training (else first test) dataset's metadata, whose classes give the class count when
            the config leaves it at 0; None looks it up in the dataset catalog from ``cfg.DATASETS``.
    Raises:
        KeyError: the method is unknown.
        TypeError: its builder returned something else than a ``ModelBundle``.
    """
    from vidseg.models.bundle import ModelBundle

    name = cfg.MODEL.META_ARCHITECTURE
    build = _method(name).resolve("build")
    if cfg.MODEL.get("CLASS_NAMES"):
        # A run's config.yaml names its classes: the model needs no annotation file (prediction elsewhere).
        metadata = _config_metadata(cfg)
    elif metadata is None:
        metadata = _catalog_metadata(cfg)
    bundle = build(cfg, metadata)
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"the builder of {name!r} returned {type(bundle).__name__}, expected ModelBundle")
    if not hasattr(bundle.criterion, "weight_dict"):
        raise TypeError(f"the criterion of {name!r} has no weight_dict")
    return bundle


def _config_metadata(cfg: Any) -> Any:
    """The classes the config itself names (``MODEL.CLASS_NAMES`` / ``MODEL.CATEGORY_IDS``)."""
    from types import SimpleNamespace

    classes = [str(c) for c in cfg.MODEL.CLASS_NAMES]
    ids = [int(c) for c in cfg.MODEL.get("CATEGORY_IDS", [])] or list(range(1, len(classes) + 1))
    return SimpleNamespace(
        name="MODEL.CLASS_NAMES", classes=classes, num_classes=len(classes), label_to_category_id=ids
    )


def _catalog_metadata(cfg: Any) -> Any:
    """Metadata of ``DATASETS.TRAIN[0]`` (else ``TEST[0]``), read from the catalog on first use; None when the
    config names no dataset."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        return None
    from vidseg.models.bundle import LazyMetadata

    def load() -> Any:
        from vidseg.data.catalog import get_dataset_metadata

        return get_dataset_metadata(names[0], cfg)

    return LazyMetadata(load)
