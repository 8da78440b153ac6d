"""Every expected error of every command is one line on stderr, the same line in the run's log.txt, and a
non-zero exit; unexpected errors (and every error with --debug) keep their traceback."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil

import pytest
import torch
from cli_helpers import error_lines, make_data, run_cli, write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("synth") / "data")


def _copy_data(data: dict, folder: pathlib.Path) -> dict:
    root = pathlib.Path(data["train_json"]).parents[1]
    shutil.copytree(root, folder)
    return {k: folder / pathlib.Path(v).relative_to(root) for k, v in data.items()}


def _one_error(err: str, command: str, log: pathlib.Path | None = None) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = error_lines(err, command)
    assert len(lines) == 1, err[-3000:]
    if log is not None:
        assert lines[0] in log.read_text(), "the error line is not in log.txt"
    return lines[0]


def _frame(d: dict, video: int = 1, frame: int = 1) -> pathlib.Path:
    videos = sorted(pathlib.Path(d["train_images"]).iterdir())
    return sorted(videos[video].iterdir())[frame]


@pytest.mark.parametrize("broken", ["deleted frame", "truncated JPEG", "invalid JSON"])
def test_train_on_broken_data_says_one_line_and_logs_it(tmp_path, capsys, data, broken):
    d = _copy_data(data, tmp_path / "data")
    workers = "0"
    if broken == "deleted frame":
        target = _frame(d)
        target.unlink()
        workers = "1"  # the error comes back from a DataLoader worker, wrapped in its traceback text
    elif broken == "truncated JPEG":
        target = _frame(d)
        target.write_bytes(target.read_bytes()[:300])
    else:
        target = pathlib.Path(d["train_json"])
        target.write_text('{"videos": [', encoding="utf-8")
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", d, out, "DATALOADER.NUM_WORKERS", workers)
    rc, _, err = run_cli(capsys, "train", "--config-file", cfg, "--no-progress")
    assert rc == 1
    line = _one_error(err, "train", out / "log.txt")
    assert str(target) in line


def test_read_only_output_dir(tmp_path, capsys, data, monkeypatch):
    ro = tmp_path / "ro"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):  # a read-only mount (chmod does not stop root, so the file system says no)
        if str(self).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    cfg = write_config(tmp_path / "cfg.yaml", data, ro / "run")
    rc, _, err = run_cli(capsys, "train", "--config-file", cfg, "--no-progress")
    assert rc == 1
    assert _one_error(err, "train") == f"vidseg train: error: {ro / 'run'}: read-only file system"


def test_full_disk_during_a_checkpoint_write(tmp_path, capsys, data, monkeypatch):
    import vidseg.engine.training_state as ckpt

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", no_space)
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", data, out)
    rc, _, err = run_cli(capsys, "train", "--config-file", cfg, "--no-progress")
    assert rc == 1
    line = _one_error(err, "train", out / "log.txt")
    assert line.startswith(f"vidseg train: error: {out / 'checkpoint.pth'}: no space left on the device")
    assert not list(out.glob(".*.tmp"))  # the failed write left no temporary


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    return path, marker


@pytest.mark.parametrize("command", ["eval", "train"])
def test_unsafe_checkpoint_is_refused_in_one_line(tmp_path, capsys, data, evil, command):
    path, marker = evil
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", data, out)
    rc, _, err = run_cli(capsys, command, "--config-file", cfg, "MODEL.WEIGHTS", path, "--no-progress")
    assert rc == 1 and not marker.exists()
    line = _one_error(err, command, out / "log.txt")
    assert str(path) in line and "allow-list" in line


def test_unsafe_checkpoint_to_resume_from(tmp_path, capsys, data, evil):
    path, marker = evil
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(path, out / "checkpoint.pth")
    cfg = write_config(tmp_path / "cfg.yaml", data, out)
    rc, _, err = run_cli(capsys, "train", "--config-file", cfg, "--resume", "--no-progress")
    assert rc == 1 and not marker.exists()
    assert str(out / "checkpoint.pth") in _one_error(err, "train", out / "log.txt")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--config-file", "no/such.yaml"], "config file not found: no/such.yaml"),
        (["MODEL.NO_SUCH_KEY", "1"], "unknown config key 'MODEL.NO_SUCH_KEY'"),
        (["MODEL.DEVICE"], "overrides must be KEY VALUE pairs"),
        (["--config-file", "{bad}"], "invalid YAML"),
        (["SOLVER.BASE_LR", "fast"], "SOLVER.BASE_LR expects float"),
    ],
)
def test_config_errors_are_one_line(tmp_path, capsys, argv, expected):
    if "{bad}" in argv:
        bad = tmp_path / "bad.yaml"
        bad.write_text("MODEL: [unclosed\n")
        argv = [str(bad) if a == "{bad}" else a for a in argv]
    rc, out, err = run_cli(capsys, "config", *argv)
    assert rc == 1 and out == ""
    assert expected in _one_error(err, "config")


@pytest.mark.parametrize(
    "command, opts, expected",
    [
        ("eval", ["DATASETS.TEST", "()"], "eval: DATASETS.TEST is empty"),
        (
            "train",
            ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "fp8"],
            "SOLVER.AMP.DTYPE: unknown 'fp8'",
        ),
        ("train", ["SOLVER.OPTIMIZER", "LION"], "SOLVER.OPTIMIZER: unknown optimizer 'LION'"),
    ],
)
def test_settings_that_cannot_work_are_one_line(tmp_path, capsys, data, command, opts, expected):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", data, out)
    rc, _, err = run_cli(capsys, command, "--config-file", cfg, *opts, "--no-progress")
    assert rc == 1 and expected in _one_error(err, command, out / "log.txt")


def test_score_bad_json_is_one_line(tmp_path, capsys, data):
    res = tmp_path / "results.json"
    res.write_text("[{", encoding="utf-8")
    rc, _, err = run_cli(capsys, "score", data["val_json"], res, "--no-progress")
    assert rc != 0 and str(res) in _one_error(err, "score")


def test_debug_shows_the_traceback_and_unexpected_errors_keep_it(capsys, monkeypatch):
    monkeypatch.setenv("VIDSEG_DEBUG", "0")  # --debug sets it (for spawned ranks): restored after the test
    rc, _, err = run_cli(capsys, "config", "MODEL.NO_SUCH_KEY", "1", "--debug")
    assert rc == 1 and "Traceback" in err and "ConfigError" in err and "MODEL.NO_SUCH_KEY" in err
    monkeypatch.setenv("VIDSEG_DEBUG", "0")

    import vidseg.commands.config as config_cmd

    def bug(args):
        return {}["missing"]  # a KeyError is a bug, not a user's mistake

    monkeypatch.setattr(config_cmd, "run", bug)
    rc, _, err = run_cli(capsys, "config")
    assert rc == 1 and "Traceback" in err and "KeyError" in err
    assert "vidseg config: unexpected error" in err


@pytest.mark.slow  # two spawned gloo ranks: ~30 s on 2 cores
def test_expected_error_on_a_spawned_rank_is_one_line(tmp_path, data):
    import subprocess
    import sys

    d = _copy_data(data, tmp_path / "data")
    missing = _frame(d)
    missing.unlink()
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", d, out, "TEST.EVAL_PERIOD", "0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "vidseg",
        "train",
        "--config-file",
        str(cfg),
        "--num-gpus",
        "2",
        "--no-progress",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert str(missing) in p.stderr and str(missing) in (out / "log.txt").read_text()
