"""Dataset catalog: standard names -> (JSON, image root) under the data root, plus user registrations.

Data root: ``DATASETS.ROOT`` if set, else the environment variable ``VIDSEG_DATASETS``, else ``./datasets``.
Each standard name lists the official folder layouts it accepts (the detectron2/VITA layout first, then the
DeVIS one); the first whose JSON exists is used. ``custom_train`` / ``custom_val`` come from
``DATASETS.CUSTOM_*``. Any YouTube-VIS-format JSON can also be registered from Python with
:func:`register_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidseg.data.category_maps import OVIS_CLASSES, YTVIS_2019_CLASSES, YTVIS_2021_CLASSES
from vidseg.data.errors import DatasetError
from vidseg.data.records import EVALUATOR_TYPES, DatasetMetadata, VideoRecord

__all__ = [
    "DatasetSpec",
    "register_dataset",
    "unregister_dataset",
    "list_datasets",
    "dataset_root",
    "get_dataset_spec",
    "load_dataset",
    "get_dataset_metadata",
]


@dataclass
class DatasetSpec:
    """Where a dataset lives and how to read it.

    Attributes:
        kind: ``"ytvis"`` (YouTube-VIS/OVIS JSON) or ``"coco"`` (COCO instances, one-frame pseudo-videos).
        coco_target: for ``kind="coco"``, map COCO classes to ``"ytvis_2019"``, ``"ytvis_2021"``, ``"ovis"``
            (VITA's tables) or ``"ytvis_2019_devis"``, ``"ytvis_2021_devis"`` (DeVIS's).
        classes: optional class names overriding the JSON's.
        builtin_classes: class names known without the file (metadata still works when the JSON is absent).
        evaluator_type: the metric that scores it (``DatasetMetadata.evaluator_type``): "ytvis", "ovis" or
            "ytvis2022" for ``kind="ytvis"``, "coco" for ``kind="coco"``; "" (the default) means "coco" or
            "ytvis" by kind.
    """

    name: str
    json_file: str
    image_root: str
    kind: str = "ytvis"
    coco_target: str | None = None
    classes: list[str] | None = None
    builtin_classes: tuple[str, ...] | None = None
    tried: list[str] = field(default_factory=list)  # candidate JSONs looked for (for messages)
    evaluator_type: str = ""

    def __post_init__(self) -> None:
        by_kind = "coco" if self.kind == "coco" else "ytvis"
        self.evaluator_type = self.evaluator_type or by_kind
        kind_ok = (self.evaluator_type == "coco") == (by_kind == "coco")
        if self.evaluator_type not in EVALUATOR_TYPES or not kind_ok:
            allowed = "'coco'" if by_kind == "coco" else "'ytvis', 'ovis' or 'ytvis2022'"
            raise ValueError(
                f"dataset {self.name!r}: evaluator_type must be {allowed} for kind {self.kind!r}, "
                f"got {self.evaluator_type!r}"
            )


_REGISTRY: dict[str, DatasetSpec] = {}

# name -> (kind, [(json, image_root) relative to the root, in order of preference], coco_target, classes)
_BUILTIN: dict[str, tuple[str, list[tuple[str, str]], str | None, tuple[str, ...] | None]] = {
    "ytvis_2019_train": (
        "ytvis",
        [
            ("ytvis_2019/train.json", "ytvis_2019/train/JPEGImages"),
            ("Youtube_VIS-2019/train/train.json", "Youtube_VIS-2019/train/JPEGImages"),
        ],
        None,
        YTVIS_2019_CLASSES,
    ),
    "ytvis_2019_val": (
        "ytvis",
        [
            ("ytvis_2019/valid.json", "ytvis_2019/valid/JPEGImages"),
            ("Youtube_VIS-2019/valid/valid.json", "Youtube_VIS-2019/valid/JPEGImages"),
        ],
        None,
        YTVIS_2019_CLASSES,
    ),
    "ytvis_2021_train": (
        "ytvis",
        [
            ("ytvis_2021/train.json", "ytvis_2021/train/JPEGImages"),
            ("ytvis_2021/train/instances.json", "ytvis_2021/train/JPEGImages"),
            ("Youtube_VIS-2021/train/instances.json", "Youtube_VIS-2021/train/JPEGImages"),
        ],
        None,
        YTVIS_2021_CLASSES,
    ),
    "ytvis_2021_val": (
        "ytvis",
        [
            ("ytvis_2021/valid.json", "ytvis_2021/valid/JPEGImages"),
            ("ytvis_2021/valid/instances.json", "ytvis_2021/valid/JPEGImages"),
            ("Youtube_VIS-2021/valid/instances.json", "Youtube_VIS-2021/valid/JPEGImages"),
        ],
        None,
        YTVIS_2021_CLASSES,
    ),
    "ytvis_2022_val": (
        "ytvis",
        [
            ("ytvis_2022/valid.json", "ytvis_2022/valid/JPEGImages"),
            ("ytvis_2022/valid/instances.json", "ytvis_2022/valid/JPEGImages"),
        ],
        None,
        YTVIS_2021_CLASSES,
    ),
    "ovis_train": (
        "ytvis",
        [
            ("ovis/annotations/train.json", "ovis/train"),
            ("ovis/annotations_train.json", "ovis/train"),
            ("OVIS/annotations_train.json", "OVIS/train"),
        ],
        None,
        OVIS_CLASSES,
    ),
    "ovis_val": (
        "ytvis",
        [
            ("ovis/annotations/valid.json", "ovis/valid"),
            ("ovis/annotations_valid.json", "ovis/valid"),
            ("OVIS/annotations_valid.json", "OVIS/valid"),
        ],
        None,
        OVIS_CLASSES,
    ),
    "coco_2017_train": (
        "coco",
        [
            ("coco/annotations/instances_train2017.json", "coco/train2017"),
            ("COCO/annotations/instances_train2017.json", "COCO/train2017"),
        ],
        None,
        None,
    ),
    "coco_2017_val": (
        "coco",
        [
            ("coco/annotations/instances_val2017.json", "coco/val2017"),
            ("COCO/annotations/instances_val2017.json", "COCO/val2017"),
        ],
        None,
        None,
    ),
}
# The standard video sets not scored with the YouTube-VIS 2019/2021 metric (every COCO set is scored "coco").
_BUILTIN_EVALUATOR_TYPES = {"ovis_train": "ovis", "ovis_val": "ovis", "ytvis_2022_val": "ytvis2022"}
# COCO pseudo-videos in a video dataset's label space (GRAtt-VIS / VITA names), read from the plain COCO JSON.
for _tgt, _tag, _cls in (
    ("ytvis_2019", "ytvis2019", YTVIS_2019_CLASSES),
    ("ytvis_2021", "ytvis2021", YTVIS_2021_CLASSES),
    ("ovis", "ovis", OVIS_CLASSES),
):
    for _split in ("train", "val"):
        _BUILTIN[f"coco2{_tag}_{_split}"] = ("coco", _BUILTIN[f"coco_2017_{_split}"][1], _tgt, _cls)
# DeVIS's COCO joint training sets, with its own category maps (COCO_TO_YT19/YT21_CATEGORY_MAP).
for _tag, _cls in (("2019", YTVIS_2019_CLASSES), ("2021", YTVIS_2021_CLASSES)):
    _coco_train = _BUILTIN["coco_2017_train"][1]
    _BUILTIN[f"coco2ytvis{_tag}_devis_train"] = ("coco", _coco_train, f"ytvis_{_tag}_devis", _cls)


def register_dataset(
    name: str,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    kind: str = "ytvis",
    classes: list[str] | None = None,
    coco_target: str | None = None,
    evaluator_type: str | None = None,
) -> DatasetSpec:
    """Register (or replace) a dataset under ``name``; it then works everywhere a catalog name does.

    ``evaluator_type`` names the metric that scores it (``"ovis"`` for OVIS data, ``"ytvis2022"``); the
    default is ``"ytvis"`` for ``kind="ytvis"`` and ``"coco"`` for ``kind="coco"``.
    """
    if kind not in ("ytvis", "coco"):
        raise ValueError(f"register_dataset({name!r}): kind must be 'ytvis' or 'coco', got {kind!r}")
    spec = DatasetSpec(
        name,
        str(json_file),
        str(image_root),
        kind,
        coco_target,
        list(classes) if classes else None,
        evaluator_type=evaluator_type or "",
    )
    _REGISTRY[name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    _REGISTRY.pop(name, None)


def list_datasets() -> list[str]:
    """Registered names, the standard names and ``custom_train``/``custom_val``."""
    return sorted(set(_REGISTRY) | set(_BUILTIN) | {"custom_train", "custom_val"})


def dataset_root(cfg: Any = None) -> Path:
    """``DATASETS.ROOT``, else ``$VIDSEG_DATASETS``, else ``./datasets``."""
    root = getattr(getattr(cfg, "DATASETS", None), "ROOT", "") if cfg is not None else ""
    return Path(root or os.environ.get("VIDSEG_DATASETS") or "./datasets")


def get_dataset_spec(name: str, cfg: Any = None) -> DatasetSpec:
    """Resolve a name: user registrations first, then ``custom_*`` (config keys), then the standard names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in ("custom_train", "custom_val"):
        split = "TRAIN" if name == "custom_train" else "VAL"
        ds = getattr(cfg, "DATASETS", None)
        json_file = getattr(ds, f"CUSTOM_{split}_JSON", "") if ds is not None else ""
        images = getattr(ds, f"CUSTOM_{split}_IMAGES", "") if ds is not None else ""
        if not json_file or not images:
            raise DatasetError(
                f"dataset {name!r}: set DATASETS.CUSTOM_{split}_JSON and DATASETS.CUSTOM_{split}_IMAGES "
                "(a YouTube-VIS-format JSON and the folder its file_names are relative to)"
            )
        kind = str(getattr(ds, "CUSTOM_FORMAT", "ytvis") or "ytvis")
        if kind not in ("ytvis", "coco"):
            raise DatasetError(f"DATASETS.CUSTOM_FORMAT must be 'ytvis' or 'coco', got {kind!r}")
        classes = list(getattr(ds, "CUSTOM_CLASSES", []) or []) or None
        return DatasetSpec(name, json_file, images, kind, None, classes)
    if name not in _BUILTIN:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    kind, layouts, target, classes = _BUILTIN[name]
    root = dataset_root(cfg)
    tried = [str(root / j) for j, _ in layouts]
    metric = _BUILTIN_EVALUATOR_TYPES.get(name, "")
    j, im = next(((j, im) for j, im in layouts if (root / j).is_file()), layouts[0])
    return DatasetSpec(name, str(root / j), str(root / im), kind, target, None, classes, tried, metric)


_CACHE: dict[tuple, tuple[list[VideoRecord], DatasetMetadata]] = {}


def load_dataset(name: str, cfg: Any = None) -> tuple[list[VideoRecord], DatasetMetadata]:
    """Records and metadata of a catalog dataset (parsed once per process and file version)."""
    from vidseg.data.coco import load_coco_json
    from vidseg.data.ytvis import load_ytvis_json

    spec = get_dataset_spec(name, cfg)
    path = Path(spec.json_file)
    if not path.is_file():
        looked = f" (looked for: {', '.join(spec.tried)})" if len(spec.tried) > 1 else ""
        raise DatasetError(
            f"dataset {name!r}: annotation file not found: {path}{looked}; set DATASETS.ROOT or "
            "$VIDSEG_DATASETS to the folder holding the datasets (see docs/datasets.md)"
        )
    key = (
        name,
        spec.json_file,
        spec.image_root,
        spec.kind,
        spec.coco_target,
        tuple(spec.classes or ()),
        spec.evaluator_type,
        path.stat().st_mtime_ns,
    )
    if key not in _CACHE:
        if spec.kind == "coco":
            loaded = load_coco_json(spec.json_file, spec.image_root, name=name, target=spec.coco_target)
        else:
            loaded = load_ytvis_json(spec.json_file, spec.image_root, name=name, classes=spec.classes)
        loaded[1].evaluator_type = spec.evaluator_type
        _CACHE[key] = loaded
    return _CACHE[key]


def get_dataset_metadata(name: str, cfg: Any = None) -> DatasetMetadata:
    """Class names and category-id maps of a dataset.

    Standard video datasets whose JSON is absent fall back to the built-in class tables (ids 1..K), so a model
    can be built and results rendered without the annotation file.
    """
    spec = get_dataset_spec(name, cfg)
    if not Path(spec.json_file).is_file() and spec.builtin_classes:
        return DatasetMetadata(
            name=name,
            classes=list(spec.builtin_classes),
            category_ids=list(range(1, len(spec.builtin_classes) + 1)),
            json_file=spec.json_file,
            image_root=spec.image_root,
            evaluator_type=spec.evaluator_type,
            has_annotations=False,
            coco_target=spec.coco_target,
        )
    return load_dataset(name, cfg)[1]
