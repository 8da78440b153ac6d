"""benchmarks/contention.py: a CPU-sized run prints its tables, and every process it started is gone after it
ends, also when it is interrupted (checked by the busy loops' tag in /proc, no clocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "contention.py"
pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc (Linux)")


def _tagged(tag: str) -> int:
    """Processes whose command line holds ``tag``."""
    n = 0
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and tag.encode() in (d / "cmdline").read_bytes():
                n += 1
        except OSError:
            pass
    return n


def _cmd(tag: str, tmp_path: Path) -> list[str]:
    return [
        sys.executable, str(BENCH), "--busy", "0,1", "--settings", "new", "--workloads", "devis-step",
        "--quiet-repeats", "1", "--tag", tag, "--md", str(tmp_path / "t.md"),
    ]  # fmt: skip


@pytest.mark.slow  # runs the quickstart several times (about 15 s); the interrupted run stays in CI
def test_small_run_prints_ratios_and_stops_its_busy_processes(tmp_path):
    tag = f"contention-test-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(_cmd(tag, tmp_path), capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    table = (tmp_path / "t.md").read_text()
    assert "### devis-step" in table and "load average at start" in table
    rows = [line for line in table.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert [r.split("|")[1:3] for r in rows] == [[" 0 ", " new "], [" 1 ", " new "]]
    assert rows[0].split("|")[4].strip() == "1.00x"  # quiet against itself
    assert rows[1].split("|")[4].strip().endswith("x")  # beside one busy loop, against quiet
    assert _tagged(tag) == 0


def test_interrupted_run_stops_every_process_it_started(tmp_path):
    tag = f"contention-test-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _cmd(tag, tmp_path)
    cmd[cmd.index("0,1")] = "2"  # straight to two busy loops
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(600):  # wait until both busy loops run (up to a minute on a loaded machine)
            if _tagged(tag) >= 3:  # the benchmark itself (its --tag argument) and two loops
                break
            time.sleep(0.1)
        assert _tagged(tag) >= 3
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130 and "stopped every process started here" in err
    assert _tagged(tag) == 0
