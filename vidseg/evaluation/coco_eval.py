"""COCO instance evaluation (bbox and segm AP) through pycocotools' ``COCOeval``.

Evaluator protocol (detectron2 style)::

    evaluator = COCOEvaluator("instances_val2017.json", output_dir="out/eval")
    evaluator.reset()
    for batch in loader:
        evaluator.process(batch, model_outputs)     # post-processed instances, or raw outputs + postprocessor
    results = evaluator.evaluate()                  # {"bbox": {"AP": .., "AP50": ..}, "segm": {...}} (x100)

``process`` also takes what the engine gives every evaluator: ``inputs=[{"video_id", "height", "width"}]``
and ``outputs=list[VideoResult]`` of one-frame pseudo-videos (``video_id`` = COCO image id), as the image
model's inference on a COCO set produces (see :mod:`vidseg.evaluation.coco_results`).

With ``torch.distributed`` initialised, every rank processes its own images; ``evaluate`` gathers the
predictions on rank 0, which runs COCOeval, writes ``coco_instances_results.json`` (atomically) and returns
the metrics (other ranks return ``{}``). An image processed twice (on one rank or several) counts once.
A ground truth without any annotation (e.g. test-dev image info) only gets the results file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vidseg.evaluation.coco_results import label_map, video_result_to_coco
from vidseg.models.devis.postprocess import ImagePostProcessor, instances_to_coco
from vidseg.structures.results import VideoResult
from vidseg.utils.atomic import atomic_write_text
from vidseg.utils.dist import gather_to_main

__all__ = ["COCOEvaluator", "load_coco_gt", "coco_metrics"]

logger = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RESULTS_FILE = "coco_instances_results.json"


def load_coco_gt(path: str | os.PathLike, allow_unannotated: bool = False) -> COCO:
    """A COCO ground-truth file, with errors that name the file and the missing field.

    ``allow_unannotated``: a file without ``annotations`` (image info only) loads with none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO ground truth not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be an object with 'images', 'annotations', 'categories'")
    if allow_unannotated:
        data.setdefault("annotations", [])
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: missing field {key!r}")
    for i, ann in enumerate(data["annotations"]):
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise ValueError(f"{path}: annotations[{i}] has no field {key!r}")
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_metrics(coco_gt: COCO, results: list[dict], iou_type: str, img_ids: Sequence[int] | None) -> dict:
    """Run COCOeval for one IoU type; metrics x100 (NaN where a size range has no ground truth)."""
    if not results:
        warnings.warn(f"COCOEvaluator: no {iou_type} predictions; all metrics are 0", stacklevel=2)
        return dict.fromkeys(METRIC_NAMES, 0.0)
    logger.info(
        "COCOeval %s: %d predictions on %s images", iou_type, len(results), len(img_ids or []) or "all"
    )
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    logger.info("COCO %s evaluation:\n%s", iou_type, log.getvalue())
    return {name: float(v * 100) if v >= 0 else float("nan") for name, v in zip(METRIC_NAMES, ev.stats[:6])}


def _image_id(meta: Mapping[str, Any]) -> int:
    for key in ("image_id", "video_id"):
        if key in meta:
            return int(meta[key])
    raise KeyError(f"COCOEvaluator: input meta has neither 'image_id' nor 'video_id' (keys: {sorted(meta)})")


class COCOEvaluator:
    """COCO bbox/segm evaluator with the ``reset / process / evaluate`` protocol.

    Args:
        gt: path to a COCO instances json, or a loaded ``pycocotools.coco.COCO``.
        output_dir: where ``coco_instances_results.json`` is written (None: not written).
        tasks: subset of ``("bbox", "segm")``.
        postprocessor: used when ``process`` receives raw model outputs.
        label_to_category: contiguous label -> dataset category id: a mapping, a list (index = label, as
            ``DatasetMetadata.label_to_category_id``) or a callable (default ``label + 1``).
        distributed: gather predictions from all ranks when ``torch.distributed`` is initialised.
        allow_unannotated: a GT file without ``annotations`` is accepted; ``evaluate`` then only writes the
            results file and returns ``{}``.
    """

    def __init__(
        self,
        gt: str | os.PathLike | COCO,
        output_dir: str | os.PathLike | None = None,
        tasks: Sequence[str] = ("bbox", "segm"),
        postprocessor: ImagePostProcessor | None = None,
        label_to_category: Callable[[int], int] | Mapping[int, int] | Sequence[int] | None = None,
        distributed: bool = True,
        allow_unannotated: bool = False,
    ) -> None:
        unknown = [t for t in tasks if t not in ("bbox", "segm")]
        if unknown:
            raise ValueError(f"COCOEvaluator: unknown tasks {unknown}; known: bbox, segm")
        self.gt_name = "<COCO object>" if isinstance(gt, COCO) else str(gt)
        self.coco_gt = gt if isinstance(gt, COCO) else load_coco_gt(gt, allow_unannotated)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.tasks = tuple(tasks)
        self.postprocessor = postprocessor
        if label_to_category is not None and not callable(label_to_category):
            label_to_category = label_map(label_to_category)  # a list is not a {label: id} mapping
        self.label_to_category = label_to_category
        self.distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []
        self._img_ids: list[int] = []
        self._seen: set[int] = set()

    def process(self, inputs: Any, outputs: Any) -> None:
        """Add the predictions of one batch.

        Args:
            inputs: a ``ClipBatch`` (its ``meta``), or a list of per-image dicts, each with ``image_id`` (or
                ``video_id``), ``orig_size`` ``(H0, W0)`` and optionally ``image_size`` ``(H, W)``. Only
                checked for its length when ``outputs`` are ``VideoResult`` s (may be None then).
            outputs: per-image results of ``ImagePostProcessor`` (``scores``, ``labels``, ``boxes`` absolute
                xyxy at the original size, optional ``masks`` ``[k, H0, W0]`` bool); or the raw model outputs
                dict (``pred_logits`` ...) when a ``postprocessor`` was given; or a ``VideoResult`` / list of
                them with one-frame tracks (``video_id`` = image id).
        """
        if isinstance(outputs, VideoResult) or (
            isinstance(outputs, Sequence) and outputs and isinstance(outputs[0], VideoResult)
        ):
            self._process_video_results(inputs, [outputs] if isinstance(outputs, VideoResult) else outputs)
            return
        metas = list(getattr(inputs, "meta", inputs))
        if isinstance(outputs, Mapping) and "pred_logits" in outputs:
            if self.postprocessor is None:
                raise ValueError("COCOEvaluator.process: raw model outputs need a postprocessor")
            padded = None
            frames = getattr(inputs, "frames", None)
            if frames is not None:
                padded = tuple(frames.shape[-2:])
            outputs = self.postprocessor(
                outputs,
                orig_sizes=[m["orig_size"] for m in metas],
                image_sizes=[m.get("image_size", padded) for m in metas] if padded is not None else None,
                padded_size=padded,
            )
        if len(outputs) != len(metas):
            raise ValueError(f"COCOEvaluator.process: {len(outputs)} outputs for {len(metas)} inputs")
        for meta, result in zip(metas, outputs):
            img_id = _image_id(meta)
            if img_id in self._seen:
                continue  # seen before (a padded sampler): the first prediction counts
            self._seen.add(img_id)
            self._img_ids.append(img_id)
            self._predictions.extend(instances_to_coco(result, img_id, self.label_to_category))

    def _process_video_results(self, inputs: Any, results: Sequence[VideoResult]) -> None:
        if inputs is not None and len(inputs) != len(results):
            raise ValueError(f"COCOEvaluator.process: {len(results)} results for {len(inputs)} inputs")
        l2c = self.label_to_category
        if l2c is None:
            l2c = _PlusOne()
        elif callable(l2c):
            l2c = _CallableMap(l2c)
        skipped = 0
        for vr in results:
            img_id = int(vr.video_id)
            if img_id in self._seen:
                continue
            entries, n = video_result_to_coco(vr, l2c, with_masks="segm" in self.tasks)
            skipped += n
            self._seen.add(img_id)
            self._img_ids.append(img_id)
            self._predictions.extend(entries)
        if skipped:
            logger.info("COCOEvaluator: %d tracks without a mask or box were dropped", skipped)

    def _gather(self) -> tuple[list[dict], list[int]] | None:
        if not self.distributed:
            return self._predictions, self._img_ids
        gathered = gather_to_main((self._predictions, self._img_ids))
        if gathered is None:
            return None
        # An image on several ranks (a padded sampler) counts once: the lowest rank's predictions.
        preds: list[dict] = []
        ids: list[int] = []
        taken: set[int] = set()
        for rank_preds, rank_ids in gathered:
            new = set(rank_ids) - taken
            preds.extend(p for p in rank_preds if p["image_id"] in new)
            ids.extend(i for i in rank_ids if i in new)
            taken |= new
        return preds, ids

    def _check(self, predictions: list[dict], img_ids: list[int]) -> None:
        """Errors that name the image: unknown ids, masks at another size than the GT image."""
        unknown_imgs = [i for i in img_ids if i not in self.coco_gt.imgs]
        if unknown_imgs:
            raise KeyError(
                f"COCOEvaluator: image ids {unknown_imgs[:10]} are not in the ground truth {self.gt_name} "
                "(field 'images'); are the predictions of another dataset?"
            )
        for p in predictions:
            seg = p.get("segmentation")
            if isinstance(seg, Mapping) and "size" in seg:
                im = self.coco_gt.imgs[p["image_id"]]
                size = [int(s) for s in seg["size"]]
                if size != [int(im["height"]), int(im["width"])]:
                    raise ValueError(
                        f"COCOEvaluator: image {p['image_id']}: predicted mask size {size} differs from the "
                        f"ground-truth image size {[im['height'], im['width']]} in {self.gt_name}"
                    )
        unknown_cats = sorted({p["category_id"] for p in predictions} - set(self.coco_gt.cats))
        if unknown_cats:
            warnings.warn(
                f"COCOEvaluator: predicted category ids {unknown_cats[:10]} are not in the ground truth "
                f"{self.gt_name} (check label_to_category)",
                stacklevel=3,
            )

    def _write(self, predictions: list[dict]) -> None:
        assert self.output_dir is not None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = atomic_write_text(self.output_dir / RESULTS_FILE, json.dumps(predictions))  # never truncated
        logger.info("COCOEvaluator: %d predictions written to %s", len(predictions), path)

    def evaluate(self) -> dict[str, dict[str, float]]:
        """COCO metrics per task, ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, "segm": {...}}``."""
        gathered = self._gather()
        if gathered is None:
            return {}
        predictions, img_ids = gathered
        img_ids = sorted(set(img_ids))
        if not img_ids:
            warnings.warn("COCOEvaluator: no images were processed", stacklevel=2)
            return {}
        self._check(predictions, img_ids)
        if len(img_ids) < len(self.coco_gt.imgs):
            logger.info("COCOEvaluator: evaluating %d of %d images", len(img_ids), len(self.coco_gt.imgs))
        if self.output_dir is not None:
            self._write(predictions)
        if not self.coco_gt.anns:
            logger.info("COCOEvaluator: %s has no annotations; results written, not scored", self.gt_name)
            return {}

        results = {}
        for task in self.tasks:
            if task == "segm":
                if predictions and any("segmentation" not in p for p in predictions):
                    raise ValueError("COCOEvaluator: task 'segm' needs masks in every prediction")
                # Without 'bbox', loadRes derives area/bbox from the mask (area ranges then use the mask
                # area).
                task_preds = [{k: v for k, v in p.items() if k != "bbox"} for p in predictions]
            else:
                task_preds = [{k: v for k, v in p.items() if k != "segmentation"} for p in predictions]
            results[task] = coco_metrics(self.coco_gt, task_preds, task, img_ids)
        return results


class _PlusOne(dict):
    """``label -> label + 1`` (the DeVIS COCO convention) as a mapping."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and key >= 0

    def __missing__(self, key: int) -> int:
        return int(key) + 1


class _CallableMap(dict):
    """A ``label -> category id`` callable as a mapping."""

    def __init__(self, fn: Callable[[int], int]) -> None:
        super().__init__()
        self.fn = fn

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int)

    def __missing__(self, key: int) -> int:
        return int(self.fn(key))
