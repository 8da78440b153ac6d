"""``vidseg plot``: training curves of one or more runs (their ``metrics.jsonl``) as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Draw the curves of training runs from their OUTPUT_DIR/metrics.jsonl: loss total and terms, learning rate
per parameter group (log axes), evaluation metrics at the iteration they were measured, time per iteration.
One run: a 2x2 grid (the same picture training writes to OUTPUT_DIR/curves.png). Several runs: one column per
run, side by side, each row on one y range."""

EPILOG = """\
examples:
  vidseg plot output/quickstart/run                       # -> output/quickstart/run/curves.png
  vidseg plot runs/a runs/b --out compare.png             # two runs side by side
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders (OUTPUT_DIR) or metrics.jsonl files")
    p.add_argument(
        "--out", default=None, help="PNG to write (default: RUN/curves.png for one run, else curves.png)"
    )


def _jsonl(run: str) -> Path:
    p = Path(run)
    return p if p.suffix == ".jsonl" else p / "metrics.jsonl"


def run(args: argparse.Namespace) -> int:
    from vidseg.engine.curves import plot_runs
    from vidseg.engine.writers import read_records

    runs = []
    for r in args.runs:
        path = _jsonl(r)
        if not path.is_file():
            print(f"error: {path}: no metrics.jsonl there (is it a training OUTPUT_DIR?)", file=sys.stderr)
            return 1
        records = read_records(path)
        if not records:
            print(f"error: {path}: no records in it", file=sys.stderr)
            return 1
        runs.append((path.resolve().parent.name, records))
    if args.out:
        out = Path(args.out)
    else:
        out = _jsonl(args.runs[0]).parent / "curves.png" if len(runs) == 1 else Path("curves.png")
    plot_runs(runs, out)
    print(f"curves of {len(runs)} run(s) -> {out}")
    return 0
