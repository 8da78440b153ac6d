"""Visdom: a real server on a free loopback port receives the logged values; an unreachable one warns once."""

import json
import socket
import subprocess
import sys
import time
import warnings

import pytest
from engine_standins import StandinData, toy_cfg

from vidseg.engine.launch import free_port
from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.writers import EVAL_WINDOW, TRAIN_WINDOW

visdom = pytest.importorskip("visdom")

# The server's own entry (python -m visdom.server) first downloads its web UI's scripts and dies offline;
# the API server itself needs none of them, so the test calls the same main() without the download.
SERVER = "from visdom.server.run_server import main; main()"


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"visdom server exited: {proc.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("visdom server did not start")


@pytest.fixture
def visdom_server(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-c", SERVER, "-port", str(port), "--hostname", "127.0.0.1"]
    cmd += ["-env_path", str(tmp_path / "visdom_env"), "-logging_level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _traces(viz, env: str, title: str) -> dict:
    data = json.loads(viz.get_window_data(f"{env}:{title}", env))
    return {t["name"]: (t["x"], t["y"]) for t in data["content"]["data"]}


def test_visdom_windows_hold_the_logged_values(tmp_path, visdom_server):
    out = tmp_path / "toy_visdom_run"
    cfg = toy_cfg(out, "VISDOM_ON", True, "VISDOM_SERVER", "http://127.0.0.1", "VISDOM_PORT", visdom_server)
    assert run_train(cfg, RunOptions(progress=False), data=StandinData()) == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    viz = visdom.Visdom(
        server="http://127.0.0.1", port=visdom_server, env=out.name, use_incoming_socket=False
    )
    assert out.name in viz.get_env_list()  # env named after the output directory
    tr = _traces(viz, out.name, TRAIN_WINDOW)
    for key in ("loss", "loss_ce", "loss_ce_unscaled", "loss_dice_0", "lr_base", "iter_time"):
        xs, ys = tr[key]
        assert xs == [r["iter"] for r in train]
        assert ys == pytest.approx([r[key] for r in train], rel=1e-9), key
    ev = _traces(viz, out.name, EVAL_WINDOW)
    assert ev["segm/AP"][0] == [1, 2]
    assert ev["segm/AP"][1] == pytest.approx([r["segm/AP"] for r in evals])


def test_unreachable_visdom_warns_once_and_training_goes_on(tmp_path):
    port = free_port()  # nothing listens there
    cfg = toy_cfg(tmp_path, "VISDOM_ON", True, "VISDOM_SERVER", "http://127.0.0.1", "VISDOM_PORT", port)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_train(cfg, RunOptions(progress=False), data=StandinData()) == 0
    visdom_warnings = [w for w in caught if "Visdom" in str(w.message)]
    assert len(visdom_warnings) == 1 and "unreachable" in str(visdom_warnings[0].message)
    assert (tmp_path / "checkpoint.pth").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 8  # 6 train + 2 eval records
