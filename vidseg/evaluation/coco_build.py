"""Config + dataset -> the COCO evaluator the engine uses for COCO-kind datasets (``evaluator_type`` "coco").

Only this module reads the config and the data catalog; :class:`~vidseg.evaluation.coco_eval.COCOEvaluator`
takes plain arguments.
"""

from __future__ import annotations

import os
from typing import Any

from vidseg.evaluation.coco_eval import COCOEvaluator
from vidseg.evaluation.coco_results import coco_gt_from_records

__all__ = ["build_coco_evaluator"]


def _coco_target(cfg: Any, name: str) -> str | None:
    """The label space a COCO catalog set is mapped into (``coco2ytvis2019_val`` -> ``"ytvis_2019"``)."""
    from vidseg.data.catalog import get_dataset_spec
    from vidseg.data.errors import DatasetError

    try:
        return get_dataset_spec(name, cfg).coco_target
    except DatasetError:  # a name only a test's data source knows: its metadata is all there is
        return None


def build_coco_evaluator(cfg: Any, name: str, meta: Any, out_dir: str | os.PathLike) -> COCOEvaluator:
    """The COCO bbox + segm evaluator of dataset ``name`` writing ``coco_instances_results.json`` into
    ``out_dir``.

    Args:
        meta: the dataset's metadata (``json_file``, ``label_to_category_id``, ``classes``, ``category_ids``).

    The ground truth is the dataset's JSON file, except for COCO sets read into a video dataset's label
    space (``coco2ytvis2019_val`` ...): their category ids differ from the file's, so the ground truth is
    built from the records as the data pipeline read them.
    """
    tasks = ("bbox", "segm") if getattr(cfg.MODEL, "MASK_ON", True) else ("bbox",)
    gt: Any = meta.json_file
    if _coco_target(cfg, name):
        from vidseg.data.catalog import load_dataset

        records, _ = load_dataset(name, cfg)
        gt = coco_gt_from_records(records, meta.classes, meta.category_ids)
    return COCOEvaluator(
        gt,
        output_dir=out_dir,
        tasks=tasks,
        label_to_category=meta.label_to_category_id,
        allow_unannotated=True,
    )
