"""Visdom as a person sees it: a real server on loopback (``vidseg visdom``, the page's files from npm
tarballs), a short training run, then headless Chromium loads the page and the expected windows are on it,
each with its title, axis labels and plotted lines. A server that is absent, or killed mid-run and started
again, costs one warning line and one recovery line; the run finishes."""

from __future__ import annotations

import json
import re
import signal

import numpy as np
import pytest
from engine_standins import StandinData, toy_cfg
from monitor_helpers import (
    VisdomServer,
    chromium,
    chromium_or_skip,
    page_files_or_skip,
    spawn_run,
    wait_for,
)
from PIL import Image

from vidseg.engine.launch import free_port
from vidseg.engine.metric_groups import GROUPS
from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.visdom_writer import VisdomWriter

visdom = pytest.importorskip("visdom")
# The test's own client (reading the windows back) uses the deprecated logger.warn.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")

SERVER_OPTS = ("VISDOM_ON", True, "VISDOM_SERVER", "http://127.0.0.1")
TRAIN_TITLES = ("loss", "loss_unweighted", "lr", "grad_norm", "time", "memory")


@pytest.fixture
def server(tmp_path):
    page_files_or_skip()
    s = VisdomServer(free_port(), tmp_path / "visdom_env").start()
    yield s
    s.stop()


def _records(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _window(viz, env: str, key: str) -> dict:
    """``{trace: (xs, ys)}`` of window ``env:key`` as the server holds it."""
    data = json.loads(viz.get_window_data(f"{env}:{key}", env))
    return {t["name"]: (t["x"], t["y"]) for t in data["content"]["data"]}


def _panes(dom: str) -> dict[str, str]:
    """Window title -> the window's HTML, from the page's DOM (one react-grid-item per window)."""
    out = {}
    for chunk in dom.split('class="react-grid-item')[1:]:
        m = re.search(r'<div class="pull-right">([^<]*)</div>', chunk)
        if m:
            out[m.group(1)] = chunk
    return out


def _run(out, port, *opts, gates="-", resume=False):
    proc = spawn_run(out, gates, *SERVER_OPTS, "VISDOM_PORT", port, *opts, resume=resume)
    return proc


def test_page_in_chromium_shows_every_window_with_its_plot(tmp_path, server):
    browser = chromium_or_skip()
    out = tmp_path / "toy_visdom_run"
    proc = _run(out, server.port)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    assert "WARNING" not in log and "Traceback" not in log, log

    recs = _records(out)
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    assert [r["iter"] for r in evals] == [3, 6]  # 3 batches per epoch: evaluations after iterations 3 and 6

    # The data behind the windows: x is the iteration everywhere, evaluations included.
    viz = visdom.Visdom(server="http://127.0.0.1", port=server.port, env=out.name, use_incoming_socket=False)
    assert out.name in viz.get_env_list()  # the run's name is the env
    loss = _window(viz, out.name, "loss")
    assert loss["total"][0] == [r["iter"] for r in train]
    assert loss["total"][1] == pytest.approx([r["loss"] for r in train], rel=1e-9)
    assert loss["ce"][1] == pytest.approx([r["loss_ce"] for r in train], rel=1e-9)
    aux = [sum(v for k, v in r.items() if re.fullmatch(r"loss_\w+_\d+", k)) for r in train]
    assert loss["aux layers (sum)"][1] == pytest.approx(aux, rel=1e-9)
    assert _window(viz, out.name, "lr")["base"][1] == pytest.approx([r["lr_base"] for r in train])
    assert _window(viz, out.name, "memory")["peak memory"][1] == pytest.approx(
        [r["memory_mb"] for r in train]
    )
    ev = _window(viz, out.name, "eval")
    assert ev["segm/AP"][0] == [3, 6]
    assert ev["segm/AP"][1] == pytest.approx([r["segm/AP"] for r in evals])

    # What a person sees: the page in a real browser.
    url = f"http://127.0.0.1:{server.port}/env/{out.name}"
    panes = _panes(chromium(browser, url, "--dump-dom"))
    for key in (*TRAIN_TITLES, "eval"):
        g = GROUPS[key]
        assert g.title in panes, f"window {g.title!r} missing from the page; windows: {sorted(panes)}"
        html = panes[g.title]
        assert f">{g.title}<" in html.split('class="gtitle"', 1)[-1][:400], f"{g.title}: no plot title"
        axis = re.findall(r'class="[xy]title"[^>]*>([^<]*)<', html)
        assert axis[:2] == [g.xlabel, g.ylabel], f"{g.title}: axis labels {axis}"
        # One drawn line (2+ vertices; plotly merges collinear ones) per trace the window holds.
        lines = [d for d in re.findall(r'class="js-line"[^>]*? d="([^"]*)"', html) if "L" in d]
        assert len(lines) == len(_window(viz, out.name, key)), f"{g.title}: {len(lines)} lines drawn"
        layout = json.loads(viz.get_window_data(f"{out.name}:{key}", out.name))["content"]["layout"]
        assert (layout["yaxis"].get("type") == "log") == g.log, f"{g.title}: y axis {layout['yaxis']}"
    legend = re.findall(r'class="legendtext"[^>]*>([^<]*)<', panes[GROUPS["loss"].title])
    assert legend == ["total", "aux layers (sum)", "ce", "dice", "mask"]

    shot = tmp_path / "page.png"
    chromium(browser, url, f"--screenshot={shot}")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2200, 1600)
    # Not blank: plotly's default first trace colour (31, 119, 180) is drawn somewhere in the windows.
    blue = np.all(np.abs(img.astype(int) - (31, 119, 180)) < 12, axis=-1)
    assert blue.sum() > 500


def _visdom_lines(log: str) -> list[str]:
    return [x for x in log.splitlines() if "visdom" in x.lower()]


def test_absent_server_one_warning_and_the_run_finishes(tmp_path, capfd):
    out = tmp_path / "run"
    cfg = toy_cfg(out, *SERVER_OPTS, "VISDOM_PORT", free_port())  # nothing listens there
    assert run_train(cfg, RunOptions(progress=False), data=StandinData()) == 0
    log = "".join(capfd.readouterr())
    lines = _visdom_lines(log)
    assert len(lines) == 1, log
    assert "WARNING" in lines[0] and "unreachable" in lines[0] and "training goes on" in lines[0]
    for noise in ("Traceback", "waiting", "Exception in user code"):
        assert noise not in log
    assert _visdom_lines((out / "log.txt").read_text()) == [lines[0].strip()]
    assert len(_records(out)) == 8  # 6 train + 2 eval records
    assert (out / "checkpoint.pth").is_file() and (out / "curves.png").is_file()


def test_server_killed_mid_run_one_warning_one_recovery_windows_complete(tmp_path, server):
    out = tmp_path / "run_killed_server"
    gates = tmp_path  # monitor_runner writes gate files next to OUT
    proc = _run(out, server.port, "SOLVER.EPOCHS", 4, "SOLVER.STEPS", "(3,)", gates="4,8")
    try:
        wait_for(lambda: (gates / "gate_at_4").exists(), proc, what="iteration 4")
        server.kill()  # SIGKILL: no goodbye to the client
        (gates / "gate_go_4").touch()
        wait_for(lambda: (gates / "gate_at_8").exists(), proc, what="iteration 8")
        server.start()  # a fresh server on the same port, empty env folder contents aside
        (gates / "gate_go_8").touch()
        log = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert proc.returncode == 0, log
    lines = _visdom_lines(log)
    warnings = [x for x in lines if "WARNING" in x]
    assert len(warnings) == 2, log
    assert "stopped answering" in warnings[0] and "training goes on" in warnings[0]
    assert "is back" in warnings[1]
    assert len(lines) == 3 and "INFO" in lines[0]  # plus the first "plots of this run at" line
    for noise in ("Traceback", "waiting", "Exception in user code"):
        assert noise not in log
    # The windows on the restarted server hold the whole run, the points of the outage included.
    train = [r for r in _records(out) if r["type"] == "train"]
    assert len(train) == 12
    viz = visdom.Visdom(server="http://127.0.0.1", port=server.port, env=out.name, use_incoming_socket=False)
    assert _window(viz, out.name, "loss")["total"][0] == [r["iter"] for r in train]


def test_history_is_redrawn_into_the_same_window(server):
    """RESUME_VIS: a resumed run's writer gets metrics.jsonl (cut at the checkpoint) and redraws it first."""
    history = [{"type": "train", "iter": i, "loss": 10.0 - i, "lr_base": 1e-3} for i in (1, 2, 3)]
    history.append({"type": "eval", "iter": 3, "epoch": 1, "segm/AP": 5.0})
    w = VisdomWriter("http://127.0.0.1", server.port, "env_resumed", history)
    w.write_train(4, {"loss": 5.0, "lr_base": 1e-4})
    viz = visdom.Visdom(
        server="http://127.0.0.1", port=server.port, env="env_resumed", use_incoming_socket=False
    )
    assert _window(viz, "env_resumed", "loss")["total"] == ([1, 2, 3, 4], [9.0, 8.0, 7.0, 5.0])
    assert _window(viz, "env_resumed", "lr")["base"][0] == [1, 2, 3, 4]
    assert _window(viz, "env_resumed", "eval")["segm/AP"] == ([3], [5.0])


@pytest.mark.slow  # ~20 s, two training subprocesses; the in-process test above covers the redraw
def test_resume_draws_into_the_same_windows_without_repeated_points(tmp_path, server):
    out = tmp_path / "run_resumed"
    proc = _run(out, server.port, gates="5")  # killed at iteration 5; the last checkpoint is at iteration 3
    try:
        wait_for(lambda: (tmp_path / "gate_at_5").exists(), proc, what="iteration 5")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    viz = visdom.Visdom(server="http://127.0.0.1", port=server.port, env=out.name, use_incoming_socket=False)
    assert _window(viz, out.name, "loss")["total"][0] == [1, 2, 3, 4, 5]

    proc = _run(out, server.port, resume=True)  # RESUME_VIS True (the default)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "resumed from" in log, log
    train = [r for r in _records(out) if r["type"] == "train"]
    xs, ys = _window(viz, out.name, "loss")["total"]
    assert xs == [r["iter"] for r in train] == [1, 2, 3, 4, 5, 6]  # 4 and 5 of the killed run are gone
    assert ys == pytest.approx([r["loss"] for r in train], rel=1e-9)
    assert _window(viz, out.name, "eval")["segm/AP"][0] == [3, 6]
