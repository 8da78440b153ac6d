"""Dataset metadata -> its evaluator: the one place that decides which metric scores a dataset.

The dataset's metadata says which metric it is scored with (``evaluator_type``, set by the data catalog):

- ``"ytvis"``: the YouTube-VIS 2019/2021 metric, :class:`~vidseg.evaluation.evaluator.YTVISEvaluator`
  (``results.json`` / ``results.zip``);
- ``"ovis"``: the same evaluator with the OVIS rules (equal frame-list lengths, occlusion stats);
- ``"ytvis2022"``: the YouTube-VIS evaluator with the 2019 rules on the full GT. The 2022 server protocol
  (``mAP = (AP_S + AP_L) / 2``) needs the short-video and long-video GT files, which no catalog entry has:
  score the written ``results.json`` with ``vidseg evaluate GT.json results.json --ytvis2022 SHORT LONG``;
- ``"coco"``: COCO bbox + segm AP, :class:`~vidseg.evaluation.coco_eval.COCOEvaluator` (it writes
  ``coco_instances_results.json``).

Nothing here reads the config: the engine passes plain arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from vidseg.evaluation.evaluator import YTVISEvaluator

__all__ = ["build_evaluator"]


def build_evaluator(
    metadata: Any,
    output_dir: str | os.PathLike,
    *,
    workers: int | None = 1,
    progress: bool = False,
    mask_on: bool = True,
    records: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
) -> Any:
    """The evaluator of a dataset, writing its results files into ``output_dir`` (build it on every rank).

    Args:
        metadata: the dataset's metadata (``vidseg.data.DatasetMetadata`` or an object with its fields):
            ``evaluator_type`` (default ``"ytvis"`` when absent), ``json_file``, ``label_to_category_id``; for
            ``"coco"`` also ``classes``, ``category_ids`` and ``coco_target``.
        output_dir: where the results files go.
        workers: processes for the YouTube-VIS metric (see :func:`~vidseg.evaluation.evaluate_ytvis`).
            1 (the default) runs it in the calling process. That is the only safe setting inside a trainer
            or any process that holds a CUDA or NCCL context: CUDA does not support ``fork``, and a fork
            copies only the calling thread, so locks held by the CUDA / NCCL threads stay locked in the
            child, which can hang. Only a process that holds neither (``vidseg evaluate``) should fork.
        progress: progress bar during the YouTube-VIS metric.
        mask_on: COCO sets are scored on segm and bbox (True) or bbox only.
        records: the dataset's records (or a function returning them), used only for a COCO set read into a
            video dataset's label space (``metadata.coco_target``): its ground truth is built from them.

    Returns:
        an evaluator with ``reset() / process(inputs, outputs) / evaluate()``.

    Raises:
        ValueError: an unknown ``evaluator_type``, or a ``coco_target`` set without ``records``.
    """
    kind = getattr(metadata, "evaluator_type", None) or "ytvis"
    if kind in ("ytvis", "ovis", "ytvis2022"):
        return YTVISEvaluator(
            metadata.json_file,
            metadata.label_to_category_id,
            os.fspath(output_dir),
            ovis=kind == "ovis",
            progress=progress,
            workers=workers,
        )
    if kind == "coco":
        return _coco_evaluator(metadata, output_dir, mask_on, records)
    raise ValueError(
        f"dataset {getattr(metadata, 'name', '') or metadata.json_file!r}: unknown evaluator_type {kind!r}; "
        "known: 'ytvis', 'ovis', 'ytvis2022', 'coco'"
    )


def _coco_evaluator(metadata: Any, output_dir: Any, mask_on: bool, records: Any) -> Any:
    """The COCO bbox (+ segm) evaluator. The ground truth is the dataset's JSON file, except for COCO sets
    read into a video dataset's label space (``coco2ytvis2019_val`` ...): their category ids differ from the
    file's, so the ground truth is built from the records as the data pipeline read them."""
    # imported here: the COCO evaluator needs torch, the YouTube-VIS one does not
    from vidseg.evaluation.coco_eval import COCOEvaluator
    from vidseg.evaluation.coco_results import coco_gt_from_records

    gt: Any = metadata.json_file
    if getattr(metadata, "coco_target", None):
        if records is None:
            raise ValueError(
                f"{metadata.json_file}: a COCO set in the {metadata.coco_target!r} label space needs its "
                "records to build the ground truth (records=...)"
            )
        recs = records() if callable(records) else records
        gt = coco_gt_from_records(recs, metadata.classes, metadata.category_ids)
    return COCOEvaluator(
        gt,
        output_dir=output_dir,
        tasks=("bbox", "segm") if mask_on else ("bbox",),
        label_to_category=metadata.label_to_category_id,
        allow_unannotated=True,
    )
