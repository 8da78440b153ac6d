"""The evaluator interface used by training (evaluation during training) and ``--eval-only``.

``reset()`` before a pass over a dataset, ``process(inputs, outputs)`` after each model call, ``evaluate()``
at the end; across distributed ranks the predictions are gathered with
:func:`vidseg.utils.dist.gather_to_main` and only rank 0 writes files and computes the metric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from vidseg.evaluation.results_file import official_entries, write_results
from vidseg.evaluation.ytvis_data import load_ground_truth
from vidseg.evaluation.ytvis_eval import evaluate_ytvis
from vidseg.structures.results import VideoResult
from vidseg.utils.dist import gather_to_main


class DatasetEvaluator:
    """Base class: ``reset() / process(inputs, outputs) / evaluate() -> {task: {metric: value}}``."""

    def reset(self) -> None:
        pass

    def process(self, inputs: Any, outputs: Any) -> None:
        pass

    def evaluate(self) -> dict[str, dict[str, float]]:
        return {}


class YTVISEvaluator(DatasetEvaluator):
    """YouTube-VIS / OVIS evaluator.

    Args:
        gt_json: the dataset's GT JSON. Without ``annotations`` (the official val/test splits) it only writes
            the results files for the servers.
        label_to_category_id: contiguous label -> dataset category id (list or dict).
        output_dir: where ``results.json`` and ``results.zip`` go (None: write nothing).
        ovis: OVIS rules (equal frame-list lengths; 18 stats with occlusion labels).
        progress: tqdm bar during the metric.
        workers: processes for the metric (see :func:`evaluate_ytvis`; None: automatic, 1: no fork).

    ``process(inputs, outputs)``: ``outputs`` is a :class:`VideoResult` or a list of them; ``inputs`` is
    unused. A video seen twice (padding of a distributed sampler, on one rank or several) is kept once: the
    first one.

    ``evaluate()`` returns ``{"segm": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
    "ARs", "ARm", "ARl", ("AP_light", ... OVIS), "AP-<category name>", ...}}`` with every value **multiplied
    by 100** (as Mask2Former / detectron2 report) and NaN where undefined; ``{}`` without GT annotations or on
    ranks > 0.
    """

    def __init__(
        self,
        gt_json: str | os.PathLike,
        label_to_category_id: Sequence[int] | Mapping[int, int],
        output_dir: str | os.PathLike | None = None,
        *,
        ovis: bool = False,
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        self.gt_json = os.fspath(gt_json)
        self.workers = workers
        self.label_to_category_id = label_to_category_id
        self.output_dir = output_dir
        self.ovis = ovis
        self.progress = progress
        self._predictions: dict[Any, list[dict]] = {}

    def reset(self) -> None:
        self._predictions = {}

    def process(self, inputs: Any, outputs: VideoResult | Sequence[VideoResult]) -> None:
        outputs = [outputs] if isinstance(outputs, VideoResult) else outputs
        for vr in outputs:
            # a video given twice (a padded distributed sampler) is kept once, the first time
            self._predictions.setdefault(vr.video_id, official_entries([vr], self.label_to_category_id))

    def evaluate(self) -> dict[str, dict[str, float]]:
        gathered = gather_to_main(self._predictions)
        if gathered is None:
            return {}
        merged: dict[Any, list[dict]] = {}
        for part in gathered:
            for vid, entries in part.items():
                merged.setdefault(vid, entries)
        entries = [e for vid in sorted(merged) for e in merged[vid]]
        if self.output_dir is not None:
            write_results(entries, self.output_dir)
        gt = load_ground_truth(self.gt_json)
        if not gt.has_annotations:
            return {}
        res = evaluate_ytvis(gt, entries, ovis=self.ovis, progress=self.progress, workers=self.workers)
        out = {k: (v * 100 if v >= 0 else math.nan) for k, v in res.stats.items()}
        for c in res.category_ids:
            ap = res.per_category_ap[c]
            out[f"AP-{res.category_names.get(c, c)}"] = ap * 100 if ap >= 0 else math.nan
        return {"segm": out}
