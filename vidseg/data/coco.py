"""COCO instances reader: each image becomes a one-frame video record (a pseudo-video once the clip
sampler repeats it), optionally with its classes mapped into a video dataset's label space
(``COCO_TO_<TGT>``).
"""

from __future__ import annotations

import os

from vidseg.data.category_maps import TARGETS
from vidseg.data.errors import DatasetError
from vidseg.data.records import DatasetMetadata, InstanceRecord, VideoRecord
from vidseg.data.ytvis import _require, metadata_from_categories, read_json

__all__ = ["load_coco_json"]


def load_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    name: str = "",
    target: str | None = None,
) -> tuple[list[VideoRecord], DatasetMetadata]:
    """Read a COCO ``instances_*.json`` into one-frame video records.

    Args:
        target: None keeps COCO's own categories; ``"ytvis_2019"``, ``"ytvis_2021"`` or ``"ovis"`` maps COCO
            categories to that dataset's ids and labels and drops annotations of unmapped classes (as the
            ``coco2<tgt>`` conversions of VITA/GenVIS/GRAtt-VIS do).

    Raises:
        DatasetError: malformed JSON or fields, annotations of unknown images or categories.
    """
    json_file = str(json_file)
    data = read_json(json_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_file}: field 'images' must be a list (is this a COCO instances file?)")
    coco_meta = metadata_from_categories(data.get("categories"), json_file)
    if target is None:
        meta, cat_map = coco_meta, {c: c for c in coco_meta.category_ids}
    else:
        if target not in TARGETS:
            raise DatasetError(f"{json_file}: unknown COCO target {target!r}; known: {sorted(TARGETS)}")
        classes, cat_map = TARGETS[target]
        meta = DatasetMetadata(name="", classes=list(classes), category_ids=list(range(1, len(classes) + 1)))
    meta.name, meta.json_file, meta.image_root, meta.evaluator_type = name, json_file, str(image_root), "coco"
    meta.coco_target = target
    to_label = meta.category_id_to_label
    records: dict[int, VideoRecord] = {}
    for i, im in enumerate(data["images"]):
        ctx = f"{json_file}: images[{i}]"
        iid = _require(im, "id", int, ctx)
        fname = _require(im, "file_name", str, ctx)
        records[iid] = VideoRecord(
            video_id=iid,
            file_names=[os.path.join(str(image_root), fname)],
            height=_require(im, "height", int, ctx),
            width=_require(im, "width", int, ctx),
            name=fname,
            source=json_file,
        )
    known = set(coco_meta.category_ids)
    for i, a in enumerate(data.get("annotations") or []):
        ctx = f"{json_file}: annotations[{i}]"
        iid = _require(a, "image_id", int, ctx)
        if iid not in records:
            raise DatasetError(f"{ctx}: field 'image_id' {iid} is not in 'images'")
        cid = _require(a, "category_id", int, ctx)
        if cid not in known:
            raise DatasetError(f"{ctx}: field 'category_id' {cid} is not in 'categories'")
        if cid not in cat_map:
            continue  # a COCO class with no equivalent in the target dataset
        tgt = cat_map[cid]
        rec = records[iid]
        rec.instances.append(
            InstanceRecord(
                id=int(a.get("id", i + 1)),
                category_id=tgt,
                label=to_label[tgt],
                segmentations=[a.get("segmentation")],
                bboxes=[a.get("bbox")],
                areas=[a.get("area")],
                iscrowd=bool(a.get("iscrowd", 0)),
            )
        )
    return list(records.values()), meta
