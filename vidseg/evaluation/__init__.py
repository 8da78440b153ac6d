"""vidseg.evaluation: the official YouTube-VIS / OVIS metric (exact and vectorised), the evaluator
interface and the results writer.

- :func:`evaluate_ytvis` / :func:`evaluate_ytvis2022`: score a results list against a GT JSON.
- :class:`YTVISEvaluator`: ``reset() / process(inputs, outputs) / evaluate()``, for training
  and ``--eval-only``.
- :func:`write_results`: ``results.json`` + ``results.zip`` for the CodaLab servers.
- :func:`build_evaluator` (``evaluation/build.py``): dataset metadata -> the evaluator of its metric.
- :class:`COCOEvaluator`: COCO bbox + segm AP of image sets (imported on first use: it needs torch, the YT-VIS
  metric does not; the evaluators, their builder and the results writer are imported on first use too).
- ``vidseg.evaluation.reference``: the readable statement of the metric that the fast one is tested against.
"""

from vidseg.evaluation.ytvis_data import EvalInputError, GroundTruth, load_ground_truth, load_results
from vidseg.evaluation.ytvis_eval import (
    OVIS_STATS,
    YTVIS_STATS,
    EvalResult,
    evaluate_ytvis,
    evaluate_ytvis2022,
)

__all__ = [
    "COCOEvaluator",
    "DatasetEvaluator",
    "EvalInputError",
    "EvalResult",
    "GroundTruth",
    "OVIS_STATS",
    "YTVISEvaluator",
    "YTVIS_STATS",
    "build_evaluator",
    "evaluate_ytvis",
    "evaluate_ytvis2022",
    "load_ground_truth",
    "load_results",
    "official_entries",
    "write_results",
]


# Imported on first use: the metric alone (``vidseg score``) does not need them.
_LAZY = {
    "DatasetEvaluator": "vidseg.evaluation.evaluator",
    "YTVISEvaluator": "vidseg.evaluation.evaluator",
    "build_evaluator": "vidseg.evaluation.build",
    "official_entries": "vidseg.evaluation.results_file",
    "write_results": "vidseg.evaluation.results_file",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "COCOEvaluator":
        from vidseg.evaluation.coco_eval import COCOEvaluator

        return COCOEvaluator
    raise AttributeError(f"module 'vidseg.evaluation' has no attribute {name!r}")
