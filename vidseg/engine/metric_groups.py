"""How the logged scalars are grouped into plots: one definition for the Visdom windows, the TensorBoard
tags and ``curves.png``.

A train record (``MetricsHook``: ``{"loss", "loss_ce", "loss_ce_0", "loss_ce_unscaled", "lr_base",
"iter_time", "data_time", "grad_norm", "memory_mb", ...}``) is split into groups of traces of one unit, so
that no trace flattens another: ``memory_mb`` (hundreds) never shares an axis with a learning rate (1e-4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Group", "TRAIN_GROUPS", "EVAL_GROUPS", "GROUPS", "split_train", "split_eval"]

_AUX = re.compile(r"_\d+$")  # loss_ce_0 .. loss_ce_4: the auxiliary decoder layers' copies of a term


@dataclass(frozen=True)
class Group:
    """One plot: ``key`` (the TensorBoard tag prefix and the Visdom window id suffix), ``title``, axis labels
    and whether the y axis is logarithmic."""

    key: str
    title: str
    ylabel: str
    log: bool
    xlabel: str = "iteration"


TRAIN_GROUPS = (
    Group("loss", "Loss: total and weighted terms", "weighted loss (log)", True),
    Group("loss_unweighted", "Loss terms before weighting", "loss (log)", True),
    Group("lr", "Learning rate per parameter group", "learning rate (log)", True),
    Group("grad_norm", "Gradient norm before clipping", "L2 norm", False),
    Group("time", "Time per iteration", "seconds", False),
    Group("memory", "Peak memory", "MiB", False),
    Group("other", "Other training scalars", "value", False),
)
EVAL_GROUPS = (
    Group("eval", "Evaluation: AP", "AP (%)", False),
    Group("eval_ar", "Evaluation: AR", "AR (%)", False),
    Group("eval_detail", "Evaluation: per object size and category", "metric (%)", False),
)
_MAIN_AP = ("AP", "AP50", "AP75")
_MAIN_AR = ("AR1", "AR10", "AR100")
GROUPS = {g.key: g for g in TRAIN_GROUPS + EVAL_GROUPS}

AUX_TRACE = "aux layers (sum)"


def split_train(scalars: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{group key: {trace name: value}}`` of one train record (the ``type``/``iter``/``epoch`` fields of a
    ``metrics.jsonl`` line are ignored). Loss traces are the total, the final layer's terms, and the sum of
    the auxiliary layers' terms (one trace instead of five per term)."""
    out: dict[str, dict[str, float]] = {}

    def put(group: str, name: str, value: float) -> None:
        out.setdefault(group, {})[name] = value

    for k, v in scalars.items():
        if k in ("type", "iter", "epoch") or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        v = float(v)
        if k == "loss":
            put("loss", "total", v)
        elif k.startswith("loss_") and k.endswith("_unscaled"):
            term = k[len("loss_") : -len("_unscaled")]
            if not _AUX.search(term):
                put("loss_unweighted", term, v)
        elif k.startswith("loss_"):
            term = k[len("loss_") :]
            if _AUX.search(term):
                out.setdefault("loss", {})
                out["loss"][AUX_TRACE] = out["loss"].get(AUX_TRACE, 0.0) + v
            else:
                put("loss", term, v)
        elif k.startswith("lr_"):
            put("lr", k[len("lr_") :], v)
        elif k == "grad_norm":
            put("grad_norm", "grad_norm", v)
        elif k in ("iter_time", "data_time"):
            put("time", k, v)
        elif k == "memory_mb":
            put("memory", "peak memory", v)
        else:
            put("other", k, v)
    return out


def split_eval(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"eval": {"segm/AP", "segm/AP50", "segm/AP75"}, "eval_ar": {"segm/AR1", "segm/AR10", ...},
    "eval_detail": {"segm/APs", "segm/AP-<category>", ...}}`` of one eval record (values by key)."""
    out: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        if k in ("type", "iter", "epoch") or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        last = k.split("/")[-1]
        group = "eval" if last in _MAIN_AP else "eval_ar" if last in _MAIN_AR else "eval_detail"
        out.setdefault(group, {})[k] = float(v)
    return out
