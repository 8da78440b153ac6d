"""vidseg.evaluation: the official YouTube-VIS / OVIS metric (exact and vectorised), the evaluator
interface and the results writer.

- :func:`evaluate_ytvis` / :func:`evaluate_ytvis2022`: score a results list against a GT JSON.
- :class:`YTVISEvaluator`: ``reset() / process(inputs, outputs) / evaluate()``, for training
  and ``--eval-only``.
- :func:`write_results`: ``results.json`` + ``results.zip`` for the CodaLab servers.
"""

from vidseg.evaluation.evaluator import DatasetEvaluator, YTVISEvaluator, gather_to_main
from vidseg.evaluation.results_writer import official_entries, write_results
from vidseg.evaluation.ytvis_data import EvalInputError, GroundTruth, load_ground_truth, load_results
from vidseg.evaluation.ytvis_eval import (
    OVIS_STATS,
    YTVIS_STATS,
    EvalResult,
    evaluate_ytvis,
    evaluate_ytvis2022,
)

__all__ = [
    "DatasetEvaluator",
    "EvalInputError",
    "EvalResult",
    "GroundTruth",
    "OVIS_STATS",
    "YTVISEvaluator",
    "YTVIS_STATS",
    "evaluate_ytvis",
    "evaluate_ytvis2022",
    "gather_to_main",
    "load_ground_truth",
    "load_results",
    "official_entries",
    "write_results",
]
