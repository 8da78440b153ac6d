"""Inference over a test set, distributed over ranks and gathered; results files; metrics.

``evaluate_dataset`` writes ``results.json`` (the official YouTube-VIS/OVIS results list) and ``results.zip``
(the same JSON at the zip root, as the challenge servers want) into its output folder, with
:func:`vidseg.evaluation.results_file.write_results` (the one results writer), and returns flat metrics
such as ``{"segm/AP": ...}`` when an evaluator is given and the set has ground truth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vidseg.evaluation.results_file import official_entries, write_results
from vidseg.structures.results import VideoResult
from vidseg.utils import dist

__all__ = ["inference_on_dataset", "flatten_metrics", "evaluate_dataset"]

logger = logging.getLogger("vidseg")


def inference_on_dataset(
    model: nn.Module,
    inference: Callable[[nn.Module, Any], VideoResult],
    dataset: Sequence,
    collate_fn: Callable | None = None,
    desc: str = "inference",
    gather: bool = True,
    progress: bool = True,
) -> list[VideoResult]:
    """Run ``inference(model, video)`` on every video; rank r takes videos r, r + world, ... .

    Returns this rank's results, or with ``gather`` all results (on every rank), ordered by ``video_id``
    and de-duplicated.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    was_training = model.training
    model.eval()
    mine: list[VideoResult] = []
    indices = range(rank, len(dataset), world)
    with torch.no_grad():
        for i in tqdm(
            indices, desc=desc, unit="video", disable=not (progress and dist.is_main_process()), leave=False
        ):
            item = dataset[i]
            video = collate_fn([item]) if collate_fn is not None else item
            mine.append(inference(model, video))
    model.train(was_training)
    if not gather:
        return mine
    by_id: dict[int, VideoResult] = {}
    for part in dist.all_gather_object(mine):
        for r in part:
            by_id.setdefault(int(r.video_id), r)
    return [by_id[k] for k in sorted(by_id)]


def flatten_metrics(res: dict) -> dict[str, float]:
    """``{"segm": {"AP": 1.0}}`` -> ``{"segm/AP": 1.0}`` (non-numbers dropped)."""
    out: dict[str, float] = {}
    for task, metrics in (res or {}).items():
        if isinstance(metrics, dict):
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    out[f"{task}/{k}"] = float(v)
        elif isinstance(metrics, (int, float)):
            out[task] = float(metrics)
    return out


def evaluate_dataset(
    model: nn.Module,
    inference: Callable[[nn.Module, Any], VideoResult],
    dataset: Sequence,
    out_dir: str | os.PathLike,
    label_to_category_id: Sequence[int] | dict[int, int],
    evaluator: Any | None = None,
    collate_fn: Callable | None = None,
    desc: str = "eval",
    progress: bool = True,
) -> dict[str, float]:
    """Distributed inference, then results files and metrics. Collective: call it on every rank.

    With an ``evaluator`` (``reset() / process(inputs, outputs) / evaluate() -> {"segm": {...}}``, built on
    every rank for ``out_dir``), each rank processes its own results and the evaluator gathers them and
    writes ``results.json`` / ``results.zip`` (as ``vidseg.evaluation.YTVISEvaluator`` does); ``inputs`` are
    ``[{"video_id", "height", "width"}]``. Without one, the results are gathered here and rank 0 writes the
    files. Returns flat metrics (``{"segm/AP": ...}``) on rank 0, ``{}`` elsewhere or without ground truth.
    """
    if evaluator is None:
        results = inference_on_dataset(model, inference, dataset, collate_fn, desc, progress=progress)
        if dist.is_main_process():
            json_path, _ = write_results(official_entries(results, label_to_category_id), out_dir)
            logger.info("wrote %d video results to %s", len(results), json_path)
        dist.barrier()
        return {}
    results = inference_on_dataset(
        model, inference, dataset, collate_fn, desc, gather=False, progress=progress
    )
    evaluator.reset()
    evaluator.process(
        [{"video_id": r.video_id, "height": r.height, "width": r.width} for r in results], results
    )
    metrics = flatten_metrics(evaluator.evaluate() or {})
    if dist.is_main_process():
        logger.info("results of %s written to %s", desc, Path(out_dir).resolve())
    dist.barrier()
    return metrics if dist.is_main_process() else {}
