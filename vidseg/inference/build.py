"""Config -> ``VideoPredictor`` arguments: the model bundle, checked weights, test resize, class names.

The predictor itself never reads the config; this module maps it (as each method's ``build(cfg)`` does).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["build_predictor_kwargs", "load_predictor_weights", "metadata_from_config"]

logger = logging.getLogger("vidseg")


def load_predictor_weights(model: nn.Module, path: str | Path, arch: str = "") -> str:
    """Load ``path`` into ``model`` and insist that it fits: every model tensor must come from the file with
    the right shape. Checkpoint keys the model does not use only give a warning.

    Raises:
        PredictorError: the file is missing, unreadable, or does not fit (names the file and the keys).
    """
    from vidseg.checkpoints import CheckpointError, load_weights
    from vidseg.inference.predictor import PredictorError

    p = Path(path)
    if not p.is_file():
        raise PredictorError(f"weights file not found: {p}")
    try:
        report = load_weights(model, p)
    except (CheckpointError, OSError, RuntimeError, ValueError, KeyError) as e:
        raise PredictorError(f"{p}: cannot load the weights: {e}") from None
    what = f"the {arch} model" if arch else "the model"
    if report.missing or report.mismatched:
        raise PredictorError(
            f"{p}: the weights do not fit {what} (is it the checkpoint of this config?): "
            f"{report.summary(max_names=8)}"
        )
    if report.unexpected:
        warnings.warn(
            f"{p}: {len(report.unexpected)} checkpoint tensors are not used by {what}: "
            f"{', '.join(report.unexpected[:8])}",
            stacklevel=2,
        )
    return report.summary()


def metadata_from_config(cfg: Any) -> tuple[list[str] | None, list[int] | None]:
    """Class names and category ids: ``MODEL.CLASS_NAMES`` / ``MODEL.CATEGORY_IDS`` when set (a run's
    config.yaml has them: no annotation file is read), else those of ``DATASETS.TEST[0]``, else
    ``DATASETS.TRAIN[0]``; ``(None, None)`` (with a warning) when neither has readable metadata."""
    model = getattr(cfg, "MODEL", None)
    names_by_label = list(getattr(model, "CLASS_NAMES", []) or [])
    if names_by_label:
        ids = list(getattr(model, "CATEGORY_IDS", []) or [])
        if ids and len(ids) != len(names_by_label):
            warnings.warn(
                f"MODEL.CATEGORY_IDS has {len(ids)} ids for {len(names_by_label)} MODEL.CLASS_NAMES: "
                "category id = label + 1",
                stacklevel=2,
            )
            ids = []
        return [str(n) for n in names_by_label], ([int(i) for i in ids] or None)
    names = [*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN]
    if not names:
        return None, None
    from vidseg.data.catalog import get_dataset_metadata
    from vidseg.data.errors import DatasetError

    problems = []
    for name in names:
        try:
            meta = get_dataset_metadata(name, cfg)
        except (DatasetError, KeyError, OSError, ValueError) as e:
            problems.append(f"{name}: {e}")
            continue
        return list(meta.classes), list(meta.label_to_category_id)
    warnings.warn(
        "no dataset metadata for class names (tracks are labelled 'class <label>', category id = label + 1): "
        + "; ".join(problems),
        stacklevel=2,
    )
    return None, None


def build_predictor_kwargs(
    cfg: Any, weights: str | None = None, *, device: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments of ``VideoPredictor`` from a resolved config.

    ``weights`` (default ``MODEL.WEIGHTS``) is loaded and checked; ``device`` defaults to ``MODEL.DEVICE``.
    ``overrides`` replace any argument (e.g. ``score_threshold``, ``topk``, ``classes``).
    """
    from vidseg.inference.predictor import PredictorError
    from vidseg.models import build_model

    arch = cfg.MODEL.META_ARCHITECTURE
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if weights and str(weights) != cfg.MODEL.WEIGHTS:
        # The builder sees the file it is built for, as in eval: GRAtt-VIS takes its memory on/off from the
        # file's keys (pre_memory_embed_*), which MODEL.WEIGHTS names.
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.freeze()
    try:
        bundle = build_model(cfg)
    except (KeyError, ValueError) as e:
        # Unknown method, or settings the method's builder rejects (e.g. no class count): a config problem.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise PredictorError(f"cannot build the model {arch!r} from the config: {msg}") from e
    if weights:
        # debug: load_weights already logs the same line at INFO (format, tensors mapped, left out)
        logger.debug("weights %s: %s", weights, load_predictor_weights(bundle.model, weights, arch))
    else:
        warnings.warn(
            f"no weights given (MODEL.WEIGHTS is empty): predicting with a randomly initialised {arch}",
            stacklevel=2,
        )
    if "classes" in overrides or "label_to_category_id" in overrides:
        classes, cat_ids = overrides.pop("classes", None), overrides.pop("label_to_category_id", None)
    else:
        classes, cat_ids = metadata_from_config(cfg)
    fmt = cfg.INPUT.FORMAT_TEST or cfg.INPUT.FORMAT
    kwargs: dict[str, Any] = dict(
        model=bundle.model,
        inference=bundle.inference,
        device=device or cfg.MODEL.DEVICE,
        classes=classes,
        label_to_category_id=cat_ids,
        min_size=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size=int(cfg.INPUT.MAX_SIZE_TEST) or None,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
        pixel_std=list(cfg.MODEL.PIXEL_STD),
        input_format=fmt,
    )
    kwargs.update(overrides)
    return kwargs
