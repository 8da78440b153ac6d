"""COCO results from the engine's :class:`VideoResult` s, and COCO ground truth from dataset records.

The engine reads a COCO image set as one-frame pseudo-videos (``video_id`` == COCO ``image_id``); an image
model's inference turns each detection into a one-frame :class:`Track`. :func:`video_result_to_coco` maps
such a result back to COCO results entries::

    {"image_id": int, "category_id": int, "score": float, "bbox": [x, y, w, h], "segmentation": RLE}

(compressed RLE with ``str`` counts, the format of ``coco_instances_results.json``).

:func:`coco_gt_from_records` builds a pycocotools ``COCO`` from the records of a COCO set read into another
label space (``coco2ytvis2019_val`` and friends), whose category ids no longer match the JSON file's.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track, VideoResult

__all__ = ["label_map", "video_result_to_coco", "coco_gt_from_records"]


def label_map(label_to_category: Sequence[int] | Mapping[int, int]) -> dict[int, int]:
    """``{label: category_id}`` from a list (index = label) or a mapping."""
    if isinstance(label_to_category, Mapping):
        return {int(k): int(v) for k, v in label_to_category.items()}
    return {i: int(c) for i, c in enumerate(label_to_category)}


def _compressed(rle: Mapping[str, Any], height: int, width: int, where: str) -> dict:
    """A track mask as compressed RLE with ``bytes`` counts (what pycocotools computes on)."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(
            f"{where}: mask must be an RLE dict with 'size' and 'counts', got {type(rle).__name__}"
        )
    size = [int(s) for s in rle["size"]]
    if size != [int(height), int(width)]:
        raise ValueError(f"{where}: mask size {size} differs from the image size {[height, width]}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_util.frPyObjects({"size": size, "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("utf-8")
    if not isinstance(counts, bytes):
        raise ValueError(f"{where}: RLE counts must be a list, str or bytes, got {type(counts).__name__}")
    return {"size": size, "counts": counts}


def _track_box(track: Track) -> list[float] | None:
    """The track's own box of its frame, when the inference stored one (``boxes``: per frame
    ``[x, y, w, h]`` in pixels or None)."""
    boxes = track.boxes
    if not boxes or boxes[0] is None:
        return None
    box = [float(v) for v in boxes[0]]
    if len(box) != 4:
        raise ValueError(f"track box must be [x, y, w, h], got {boxes[0]}")
    return box


def video_result_to_coco(
    result: VideoResult, label_to_category: Mapping[int, int], with_masks: bool = True
) -> tuple[list[dict], int]:
    """COCO results entries of one image (a one-frame :class:`VideoResult`).

    Args:
        result: ``video_id`` is the COCO image id; every track has exactly one frame.
        label_to_category: contiguous label -> dataset category id (see :func:`label_map`).
        with_masks: add ``"segmentation"`` (compressed RLE, ``str`` counts).
    Returns:
        ``(entries, skipped)``: the entries, and how many tracks had neither a mask nor a box (dropped).
        The box is the track's own box if it has one (``track.boxes[0]``), else the mask's tight box.
    Raises:
        ValueError: a track with several frames (not an image result), a mask of the wrong size.
        KeyError: a label without a category id.
    """
    img_id, h, w = int(result.video_id), int(result.height), int(result.width)
    out, skipped = [], 0
    for j, tr in enumerate(result.tracks):
        where = f"image {img_id}: track {j}"
        if len(tr.masks) != 1:
            raise ValueError(
                f"{where} has {len(tr.masks)} frames; COCO evaluation takes one-frame results of an image set"
            )
        if int(tr.label) not in label_to_category:
            raise KeyError(f"{where}: label {tr.label} has no category id in the dataset's label map")
        rle = tr.masks[0]
        box = _track_box(tr)
        if not rle and box is None:
            skipped += 1
            continue
        crle = _compressed(rle, h, w, where) if rle else None
        if box is None:
            box = [float(v) for v in mask_util.toBbox(crle)]
        entry = {
            "image_id": img_id,
            "category_id": label_to_category[int(tr.label)],
            "score": float(tr.score),
            "bbox": box,
        }
        if with_masks:
            if crle is None:  # a box without a mask: an empty mask keeps it in the segm ranking
                entry["segmentation"] = encode_rle(np.zeros((h, w), dtype=bool))
            else:
                entry["segmentation"] = {"size": [h, w], "counts": crle["counts"].decode("utf-8")}
        out.append(entry)
    return out, skipped


def coco_gt_from_records(records: Sequence[Any], classes: Sequence[str], category_ids: Sequence[int]) -> COCO:
    """A pycocotools ``COCO`` of the records' instances, in the records' own category ids.

    Args:
        records: ``vidseg.data.VideoRecord`` of one-frame pseudo-videos (``video_id`` = image id, ``height``,
            ``width``, ``instances`` with ``id``, ``category_id``, ``segmentations[0]``, ``bboxes[0]``,
            ``areas[0]``, ``iscrowd``).
        classes, category_ids: the label space (names and ids) the records use.
    """
    images, anns = [], []
    for rec in records:
        h, w = int(rec.height), int(rec.width)
        images.append({"id": int(rec.video_id), "height": h, "width": w, "file_name": rec.name})
        for inst in rec.instances:
            segm = inst.segmentations[0] if inst.segmentations else None
            bbox = inst.bboxes[0] if inst.bboxes else None
            area = inst.areas[0] if inst.areas else None
            if bbox is None and not segm:
                continue
            if bbox is None or area is None:
                rle = _segm_rle(segm, h, w)
                bbox = bbox if bbox is not None else [float(v) for v in mask_util.toBbox(rle)]
                area = area if area is not None else float(mask_util.area(rle))
            ann = {
                "id": len(anns) + 1,  # unique over the set (instance ids repeat across images in some files)
                "image_id": int(rec.video_id),
                "category_id": int(inst.category_id),
                "bbox": [float(v) for v in bbox],
                "area": float(area),
                "iscrowd": int(bool(inst.iscrowd)),
            }
            if segm:
                ann["segmentation"] = segm
            anns.append(ann)
    cats = [{"id": int(c), "name": str(n)} for c, n in zip(category_ids, classes)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _segm_rle(segm: Any, h: int, w: int) -> dict:
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, h, w))
    return _compressed(segm, h, w, "ground truth")
