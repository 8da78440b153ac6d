"""Shared by the monitoring tests: a real Visdom server on loopback (``vidseg visdom``), the gated toy run
of ``monitor_runner.py``, headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent / "monitor_runner.py"
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    # The subprocesses import this checkout's vidseg, one thread each (the CPU is shared).
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def wait_for(pred, proc: subprocess.Popen | None = None, polls: int = 3600, what: str = "") -> None:
    """Poll ``pred`` every 50 ms until it holds; fail if ``proc`` ends first, or after ``polls`` polls (a hang
    guard counted in polls, not a clock: nothing here asserts how long anything took)."""
    for _ in range(polls):
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended early (rc {proc.returncode}) waiting for {what}:\n{out}")
        time.sleep(0.05)
    raise AssertionError(f"still waiting for {what} after {polls} polls")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def page_files_or_skip() -> None:
    """Install the Visdom page's files (cache or npm registry), or skip saying why."""
    pytest.importorskip("visdom")
    from vidseg.utils import visdom_assets as va

    if not va.missing_assets():
        return
    try:
        va.install_assets(log=lambda *_: None)
    except (OSError, ValueError) as e:
        pytest.skip(
            f"the Visdom page's files are not installed and npm is unreachable ({e}); run vidseg visdom"
        )


class VisdomServer:
    """``python -m vidseg visdom`` on a free loopback port, in a subprocess; restartable on the same port."""

    def __init__(self, port: int, env_path: Path) -> None:
        self.port, self.env_path, self.proc = port, env_path, None

    def start(self) -> VisdomServer:
        cmd = [
            sys.executable,
            "-m",
            "vidseg",
            "visdom",
            "--port",
            str(self.port),
            "--env-path",
            str(self.env_path),
        ]
        self.proc = subprocess.Popen(
            cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        wait_for(lambda: port_open(self.port), self.proc, 1200, "the visdom server")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        wait_for(lambda: not port_open(self.port), None, 30, "the port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawn_run(out: Path, gates: str, *opts, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, str(RUNNER), str(out), gates, *(["--resume"] if resume else []), *map(str, opts)]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no headless Chromium on this machine (Debian: apt-get install -y chromium; .ci/run installs it)"
    )


def chromium(browser: str, url: str, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium on ``url`` with ``args`` (--dump-dom, --screenshot=F); its stdout."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1600,2200",
        "--virtual-time-budget=15000",  # let the page's scripts and its websocket run before the dump
        *args,
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"chromium failed (rc {r.returncode}): {r.stderr[-2000:]}"
    return r.stdout
