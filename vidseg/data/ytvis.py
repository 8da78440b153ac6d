"""YouTube-VIS / OVIS JSON reader: ``videos``, ``categories`` and (optional) ``annotations`` -> video records.

Format: videos ``{id, width, height, length, file_names}``; categories ``{id, name}``; annotations
``{id, video_id, category_id, iscrowd, segmentations[T], areas[T], bboxes[T]}`` with ``None`` for frames where
the object is absent. Every structural problem raises :class:`DatasetError` naming the file, the video and
the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vidseg.data.errors import DatasetError, where
from vidseg.data.records import DatasetMetadata, InstanceRecord, VideoRecord

__all__ = ["read_json", "metadata_from_categories", "load_ytvis_json"]


def read_json(json_file: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing file or a syntax error becomes a :class:`DatasetError` naming the file."""
    path = Path(json_file)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason})") from None


def _require(obj: Any, key: str, kind: type | tuple[type, ...], ctx: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DatasetError(f"{ctx}: missing field {key!r}")
    val = obj[key]
    if not isinstance(val, kind) or isinstance(val, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DatasetError(f"{ctx}: field {key!r} must be {names}, got {type(val).__name__}")
    return val


def metadata_from_categories(
    categories: Any, json_file: str, name: str = "", classes: list[str] | None = None
) -> DatasetMetadata:
    """Contiguous labels from a JSON ``categories`` list, sorted by id (ids 1..K give label = id - 1)."""
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{where(json_file, field='categories')}: must be a non-empty list")
    cats = []
    for i, c in enumerate(categories):
        ctx = f"{json_file}: categories[{i}]"
        cid = _require(c, "id", int, ctx)
        cname = c.get("name", f"class_{cid}") if isinstance(c, dict) else ""
        cats.append((cid, str(cname)))
    cats.sort()
    ids = [c for c, _ in cats]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{where(json_file, field='categories')}: duplicate category ids {ids}")
    names = [n for _, n in cats]
    if classes:
        if len(classes) != len(ids):
            raise DatasetError(
                f"{json_file}: DATASETS.CUSTOM_CLASSES has {len(classes)} names, "
                f"the JSON has {len(ids)} categories"
            )
        names = list(classes)
    return DatasetMetadata(name=name, classes=names, category_ids=ids, json_file=str(json_file))


def _per_frame(ann: dict, key: str, length: int, ctx: str, required: bool) -> list | None:
    if key not in ann or ann[key] is None:
        if required:
            raise DatasetError(f"{ctx}: missing field {key!r}")
        return None
    val = ann[key]
    if not isinstance(val, list):
        raise DatasetError(
            f"{ctx}: field {key!r} must be a list (one entry per frame), got {type(val).__name__}"
        )
    if len(val) != length:
        raise DatasetError(f"{ctx}: field {key!r} has {len(val)} entries but the video has {length} frames")
    return val


def load_ytvis_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    name: str = "",
    classes: list[str] | None = None,
) -> tuple[list[VideoRecord], DatasetMetadata]:
    """Read a YouTube-VIS / OVIS JSON into per-video records and the dataset metadata.

    Args:
        json_file: the annotation JSON (``annotations`` may be missing or null for unannotated splits).
        image_root: folder that ``file_names`` are relative to (``.../JPEGImages`` for YouTube-VIS).
        name: catalog name stored in the metadata.
        classes: optional class names replacing the JSON's (same count and order of ascending ids).

    Raises:
        DatasetError: malformed JSON, missing/mistyped fields, a per-frame list whose length differs from the
            video length, an annotation of an unknown video or an unknown category id.
    """
    json_file = str(json_file)
    data = read_json(json_file)
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: top level must be an object with 'videos' and 'categories'")
    meta = metadata_from_categories(data.get("categories"), json_file, name=name, classes=classes)
    meta.image_root = str(image_root)
    cat_to_label = meta.category_id_to_label
    videos_raw = data.get("videos")
    if not isinstance(videos_raw, list):
        hint = (
            " (this looks like a COCO image JSON: for a custom set use DATASETS.CUSTOM_FORMAT coco)"
            if videos_raw is None and "images" in data
            else ""
        )
        raise DatasetError(f"{where(json_file, field='videos')}: must be a list of videos{hint}")
    records: dict[int, VideoRecord] = {}
    for i, v in enumerate(videos_raw):
        ctx = f"{json_file}: videos[{i}]"
        vid = _require(v, "id", int, ctx)
        ctx = f"{json_file}: video {vid}"
        files = _require(v, "file_names", list, ctx)
        if not files or not all(isinstance(f, str) for f in files):
            raise DatasetError(f"{ctx}: field 'file_names' must be a non-empty list of strings")
        length = v.get("length", len(files))
        if length != len(files):
            raise DatasetError(f"{ctx}: field 'length' is {length} but 'file_names' has {len(files)} entries")
        if vid in records:
            raise DatasetError(f"{ctx}: duplicate video id")
        records[vid] = VideoRecord(
            video_id=vid,
            file_names=[os.path.join(str(image_root), f) for f in files],
            height=_require(v, "height", int, ctx),
            width=_require(v, "width", int, ctx),
            name=os.path.dirname(files[0]) or str(vid),
            source=json_file,
        )
    anns = data.get("annotations")
    meta.has_annotations = anns is not None
    if anns is not None and not isinstance(anns, list):
        raise DatasetError(f"{where(json_file, field='annotations')}: must be a list (or null)")
    for i, a in enumerate(anns or []):
        ctx = f"{json_file}: annotations[{i}]"
        vid = _require(a, "video_id", int, ctx)
        if vid not in records:
            raise DatasetError(f"{ctx}: field 'video_id' {vid} is not in 'videos'")
        rec = records[vid]
        ann_id = a.get("id", i + 1)
        ctx = f"{json_file}: video {rec.describe()}: annotation {ann_id}"
        cid = _require(a, "category_id", int, ctx)
        if cid not in cat_to_label:
            raise DatasetError(f"{ctx}: field 'category_id' {cid} is not in 'categories' {meta.category_ids}")
        rec.instances.append(
            InstanceRecord(
                id=int(ann_id),
                category_id=cid,
                label=cat_to_label[cid],
                segmentations=_per_frame(a, "segmentations", rec.length, ctx, required=True),
                bboxes=_per_frame(a, "bboxes", rec.length, ctx, required=False),
                areas=_per_frame(a, "areas", rec.length, ctx, required=False),
                iscrowd=bool(a.get("iscrowd", 0)),
            )
        )
    return list(records.values()), meta
