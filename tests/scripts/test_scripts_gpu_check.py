"""scripts/gpu_check.sh: the steps its --dry-run lists are the GPU checks, wired to real tests and flags."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = [
    "env", "triton-gpu", "triton-small", "msda-fp32", "msda-bf16", "models", "mask2former", "devis-video",
    "grattvis", "engine-gpu",
]  # fmt: skip
LINE = re.compile(r"^step (\d+)/(\d+) (\S+) \(needs (\w+), at most (\d+) s\): (.*)$")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str, int, list[str]]]:
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stderr
    out = []
    for line in res.stdout.splitlines():
        m = LINE.match(line)
        if m:
            assert int(m[1]) == len(out) + 1 and int(m[2]) == len(STEPS)
            out.append((m[3], m[4], int(m[5]), shlex.split(m[6])))
    assert res.stdout.strip().endswith(f"at most {sum(s[2] for s in out)} s in all")
    return out


def test_dry_run_lists_every_gpu_check_within_ten_minutes(steps):
    assert [s[0] for s in steps] == STEPS
    assert sum(s[2] for s in steps) <= 600
    needs = dict((s[0], s[1]) for s in steps)
    assert needs["triton-gpu"] == needs["triton-small"] == "triton" and needs["msda-bf16"] == "bf16"
    cmds = {s[0]: s[3] for s in steps}
    assert (
        cmds["triton-gpu"][0] == cmds["triton-small"][0] == "TRITON_INTERPRET=0"
    )  # compiled, not interpreted
    assert cmds["msda-fp32"][cmds["msda-fp32"].index("--dtype") + 1] == "float32"
    assert cmds["msda-bf16"][cmds["msda-bf16"].index("--dtype") + 1] == "bfloat16"
    models = cmds["models"]
    assert models[models.index("--size") + 1 : models.index("--size") + 3] == ["360", "640"]
    assert "--train" in models and models[models.index("--device") + 1] == "cuda"
    for name, model_flag in (("mask2former", "mask2former"), ("grattvis", "grattvis")):
        cmd = cmds[name]
        assert cmd[cmd.index("--model") + 1] == model_flag and cmd[cmd.index("--device") + 1] == "cuda"
    assert "--devis" in cmds["devis-video"] and "--full" in cmds["grattvis"]


def _script_and_flags(cmd: list[str]) -> tuple[Path, list[str]]:
    script = next(ROOT / a for a in cmd if a.endswith(".py"))
    return script, [a for a in cmd if a.startswith("--")]


def test_benchmark_steps_use_flags_the_scripts_accept(steps):
    helps: dict[Path, str] = {}
    for name, _, _, cmd in steps:
        if not name.startswith(("msda", "models")):
            continue
        script, flags = _script_and_flags(cmd)
        assert script.is_file(), script
        if script not in helps:
            helps[script] = subprocess.run(
                [sys.executable, str(script), "--help"],
                capture_output=True,
                text=True,
                env=_env(),
                check=True,
            ).stdout
        help_text = helps[script]
        for f in flags:
            assert re.search(rf"(^|\s|\[){re.escape(f)}\b", help_text), f"{name}: {script.name} has no {f}"


def _collected(args: list[str]) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return [line for line in res.stdout.splitlines() if "::" in line]


@pytest.mark.slow  # collects the whole suite in subprocesses (about 10 s)
def test_test_steps_select_the_gpu_tests(steps):
    cmds = {s[0]: s[3] for s in steps}
    for name in ("triton-gpu", "triton-small", "engine-gpu"):
        cmd = cmds[name]
        args = cmd[cmd.index("pytest") + 1 :]
        args = [a for a in args if a not in ("-q", "-x", "-rs")]
        ids = _collected(args)
        assert ids, f"{name} selects no test"
        if name == "triton-gpu":
            assert all("test_ops_msda_triton.py::test_gpu_" in i for i in ids)
        if name == "triton-small":
            assert not any("::test_gpu_" in i for i in ids)
        if name == "engine-gpu":
            assert any("test_amp_training_on_gpu" in i for i in ids)
            assert any("nccl" in i for i in ids)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_stops_with_one_line_and_a_report(tmp_path):
    res = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, env=_env()
    )
    assert res.returncode == 1
    assert "gpu_check: FAILED before step 1:" in res.stderr and "sees no CUDA device" in res.stderr
    assert f"gpu_check: report: {tmp_path}/report.md" in res.stdout
    assert "not run" in (tmp_path / "report.md").read_text()
