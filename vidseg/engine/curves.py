"""Training curves as a PNG, from ``metrics.jsonl`` records (matplotlib's Agg canvas: no display needed).

One run: a 2x2 grid (loss total and terms, learning rates, evaluation metrics, time per iteration). Several
runs: one column per run, the same four rows, each row on one y range so the runs compare at a glance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from vidseg.engine.metric_groups import GROUPS, split_eval, split_train
from vidseg.utils.atomic import atomic_path

__all__ = ["plot_runs", "PANELS"]

# (panel title, group keys drawn in it, y label, log y axis)
PANELS = (
    ("Loss: total and weighted terms", ("loss",), "weighted loss (log)", True),
    ("Learning rate per parameter group", ("lr",), "learning rate (log)", True),
    ("Evaluation", ("eval", "eval_ar"), "metric (%)", False),
    ("Time per iteration", ("time",), "seconds", False),
)


def _series(records: Sequence[dict]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """``{group key: {trace: (iterations, values)}}``."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for rec in records:
        kind = rec.get("type")
        groups = split_train(rec) if kind == "train" else split_eval(rec) if kind == "eval" else {}
        x = float(rec.get("iter", 0))
        for key, traces in groups.items():
            for name, v in traces.items():
                xs, ys = out.setdefault(key, {}).setdefault(name, ([], []))
                xs.append(x)
                ys.append(v)
    return out


def _draw_panel(ax, series: dict, keys: tuple[str, ...], log: bool) -> int:
    n = 0
    for key in keys:
        for name in sorted(series.get(key, {}), key=lambda s: (s != "total", s)):
            xs, ys = series[key][name]
            if log:
                pts = [(x, y) for x, y in zip(xs, ys) if y > 0]  # a log axis cannot show 0
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if not xs:
                continue
            style = {"marker": "o", "markersize": 4} if key.startswith("eval") or len(xs) < 3 else {}
            ax.plot(xs, ys, label=name, linewidth=2.2 if name == "total" else 1.4, **style)
            n += 1
    if log and n:
        ax.set_yscale("log")
        _plain_log_labels(ax)
    return n


def _plain_log_labels(ax) -> None:
    """Log-axis labels as plain numbers (20, 0.001) instead of 2x10^1, the minor ticks at 2 and 5 labelled
    too (a loss rarely spans several decades)."""
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _pos: int) -> str:
        if v <= 0:
            return ""
        lead = v / 10 ** math.floor(math.log10(v) + 1e-9)
        return f"{v:g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def plot_runs(runs: Sequence[tuple[str, Sequence[dict]]], out_path: str | os.PathLike) -> Path:
    """Draw ``runs`` (``[(name, metrics.jsonl records)]``) into ``out_path`` (PNG, written atomically:
    a half-written picture is never left behind). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("plot_runs: no runs to draw")
    n = len(runs)
    single = n == 1
    rows, cols = (2, 2) if single else (len(PANELS), n)
    fig = Figure(figsize=(12, 8) if single else (4.6 * n, 3.2 * len(PANELS)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    # One iteration axis for all panels of a run (evaluations line up under the loss); one y range per row
    # when runs are compared.
    axes = fig.subplots(
        rows, cols, squeeze=False, sharex=True if single else "col", sharey=not single and "row"
    )
    for c, (name, records) in enumerate(runs):
        series = _series(records)
        for p, (title, keys, ylabel, log) in enumerate(PANELS):
            ax = axes[p // 2][p % 2] if single else axes[p][c]
            drawn = _draw_panel(ax, series, keys, log)
            ax.set_title(title if single else f"{name}: {title}", fontsize=10)
            ax.set_xlabel(GROUPS[keys[0]].xlabel)
            ax.tick_params(labelbottom=True)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.35)
            if drawn:
                ax.legend(fontsize=8, loc="best")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    if single:
        fig.suptitle(f"{runs[0][0]}: training curves", fontsize=12)
    out = Path(out_path)
    with atomic_path(out, durable=False) as tmp:
        fig.savefig(tmp, format="png")
    return out
