"""``vidseg score``: score a results JSON against a ground-truth JSON (official YouTube-VIS metric)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

DESCRIPTION = (
    "Score a YouTube-VIS / OVIS results JSON against a ground-truth JSON. The numbers are those of "
    "the official\n"
    "youtubevos/cocoapi code (and the OVIS fork with --ovis), quirks included; see docs/evaluation.md."
)
EPILOG = """examples:
  vidseg score annotations/valid_sub.json output/inference/results.json
  vidseg score ovis_valid.json results.json --ovis --per-category --json scores.json
  vidseg score gt.json results.json --ytvis2022 gt_short.json gt_long.json

The table shows values x100 ('-' where undefined: no ground truth in any category of that range).
--json writes the raw official values (fractions; -1 where undefined)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gt", metavar="GT.json", help="ground truth (official YouTube-VIS / OVIS format)")
    p.add_argument("results", metavar="RESULTS.json", help="predictions (official results format)")
    p.add_argument(
        "--ovis", action="store_true", help="OVIS rules; 18 stats when the GT has occlusion labels"
    )
    p.add_argument(
        "--ytvis2022",
        nargs=2,
        metavar=("SHORT.json", "LONG.json"),
        help="YT-VIS 2022 protocol: GT.json is the full GT, scored on the short and long video GTs "
        "separately",
    )
    p.add_argument("--per-category", action="store_true", help="also print AP per category")
    p.add_argument("--json", metavar="OUT", help="write the stats as JSON to OUT ('-' for stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="processes to use (forked; default: one per available CPU, at most 8, fewer for small inputs; "
        "1: a single process). The numbers do not depend on it",
    )


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _fmt(v: float) -> str:
    return f"{v * 100:6.2f}" if v >= 0 else "     -"


def _table(title: str, stats: dict[str, float]) -> str:
    names = list(stats)
    width = max(len(n) for n in names)
    lines = [title, "-" * (width + 9)]
    lines += [f"{n:<{width}} | {_fmt(stats[n])}" for n in names]
    return "\n".join(lines)


def _per_category(res) -> str:
    width = max([len(str(res.category_names.get(c, c))) for c in res.category_ids] + [8])
    lines = [f"{'category':<{width}} |     AP"]
    for c in res.category_ids:
        lines.append(f"{str(res.category_names.get(c, c)):<{width}} | {_fmt(res.per_category_ap[c])}")
    return "\n".join(lines)


def _score(args: argparse.Namespace, evaluate_ytvis, evaluate_ytvis2022) -> tuple:
    """``(raw output, {part name: EvalResult}, report dict)``."""
    out = None
    if args.ytvis2022:
        out = evaluate_ytvis2022(
            args.gt, *args.ytvis2022, args.results, progress=not args.no_progress, workers=args.workers
        )
        parts = {"short": out["short"], "long": out["long"]}
        report: dict = {"mAP": out["mAP"], **{k: v.to_dict() for k, v in parts.items()}}
    else:
        res = evaluate_ytvis(
            args.gt, args.results, ovis=args.ovis, progress=not args.no_progress, workers=args.workers
        )
        parts = {"": res}
        report = res.to_dict()
    return out, parts, report


def run(args: argparse.Namespace) -> int:
    from vidseg.evaluation.ytvis_data import EvalInputError
    from vidseg.evaluation.ytvis_eval import evaluate_ytvis, evaluate_ytvis2022

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, parts, report = _score(args, evaluate_ytvis, evaluate_ytvis2022)
    except (EvalInputError, FileNotFoundError) as e:
        print(f"vidseg score: error: {e}", file=sys.stderr)
        return 1
    finally:
        for w in caught:  # one line each, without the source line Python's default format adds
            print(f"vidseg score: warning: {w.message}", file=sys.stderr)
    to_stdout = args.json == "-"
    text = []
    for name, res in parts.items():
        text.append(_table(f"YouTube-VIS {name} videos" if name else "YouTube-VIS metric", res.stats))
        if args.per_category:
            text.append(_per_category(res))
    if args.ytvis2022:
        text.append(f"mAP = (AP_S + AP_L) / 2 = {_fmt(out['mAP']).strip()}")
    print("\n\n".join(text), file=sys.stderr if to_stdout else sys.stdout)
    if args.json:
        if not args.per_category:
            for part in [report] if not args.ytvis2022 else [report["short"], report["long"]]:
                part.pop("per_category")
        dumped = json.dumps(report, indent=2)
        if to_stdout:
            print(dumped)
        else:
            with open(args.json, "w") as f:
                f.write(dumped + "\n")
    return 0
