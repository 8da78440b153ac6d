"""Cost of the metric writers per logging interval: JSON lines (the baseline, always on), TensorBoard, Visdom
(a real ``vidseg visdom`` server on loopback), and ``curves.png`` (drawn at each evaluation and at the end).

    python benchmarks/monitoring.py [--writes 40] [--records 320]

Each write is one DeVIS-sized train record: 69 scalars (total, 5 terms x 6 layers, scaled and unscaled, 4
learning rates, times, memory). Prints a markdown table: median ms per write and the ratio to the JSON-lines
writer, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidseg.engine.curves import plot_runs  # noqa: E402
from vidseg.engine.writers import JSONLinesWriter, TensorBoardWriter, VisdomWriter  # noqa: E402


def record(i: int) -> dict[str, float]:
    rec = {"loss": 20.0 / i**0.3, "grad_norm": 3.0, "iter_time": 0.3, "data_time": 0.01, "memory_mb": 455.0}
    rec.update({f"lr_{g}": 1e-4 for g in ("base", "backbone", "linear_proj", "mask_head")})
    for t in ("ce", "bbox", "giou", "mask", "dice"):
        for layer in ("", "_0", "_1", "_2", "_3", "_4"):
            rec[f"loss_{t}{layer}"] = 1.0 / i**0.2
            rec[f"loss_{t}{layer}_unscaled"] = 0.5 / i**0.2
    return rec


def time_writes(writer, n: int) -> float:
    ts = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        writer.write_train(i, record(i))
        ts.append(time.perf_counter() - t0)
    writer.close()
    return statistics.median(ts[1:]) * 1e3


def start_server(tmp: Path) -> tuple[subprocess.Popen, int] | None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vidseg", "visdom", "--port", str(port), "--env-path", str(tmp / "env")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if proc.poll() is not None:
            return None
        time.sleep(0.1)
    proc.kill()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=40, help="writes timed per writer (default 40)")
    ap.add_argument("--records", type=int, default=320, help="train records in curves.png (default 320)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = time_writes(JSONLinesWriter(tmp / "metrics.jsonl"), args.writes)
        rows.append(("JSON lines (metrics.jsonl)", base))
        rows.append(("TensorBoard", time_writes(TensorBoardWriter(tmp / "tb"), args.writes)))
        server = start_server(tmp)
        if server is not None:
            try:
                w = VisdomWriter("http://127.0.0.1", server[1], "bench")
                rows.append(("Visdom (loopback server)", time_writes(w, args.writes)))
            finally:
                server[0].terminate()
                server[0].wait(10)
        recs = [{"type": "train", "iter": i, **record(i)} for i in range(1, args.records + 1)]
        recs += [{"type": "eval", "iter": i, "segm/AP": 30.0} for i in range(40, args.records + 1, 40)]
        plot_runs([("bench", recs)], tmp / "warm.png")  # matplotlib's imports and font cache
        draws = []
        for _ in range(3):
            t0 = time.perf_counter()
            plot_runs([("bench", recs)], tmp / "curves.png")
            draws.append(time.perf_counter() - t0)
        rows.append((f"curves.png ({args.records} records), per draw", statistics.median(draws) * 1e3))
    print("| writer | ms per write | vs JSON lines |")
    print("|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / base:.0f}x |")
    if server is None:
        print("\n(no Visdom row: visdom or its page files are missing; run vidseg visdom --fetch-only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
