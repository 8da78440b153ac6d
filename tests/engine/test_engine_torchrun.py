"""Multi-process and multi-node launching on CPU (gloo): torchrun on one node with 2 processes, two
"nodes" on the loopback interface joined by torchrun's c10d rendezvous, and the detectron2-style
``--num-machines`` layout without torchrun. Every rank must end with the same weights."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidseg.engine.launch import free_port

RUNNER = Path(__file__).resolve().parent / "engine_runner.py"


def _env() -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _run_together(jobs: list[tuple[list[str], dict]], timeout: int = 300) -> None:
    """Start every ``(command, env)`` at once (the "nodes" must meet at the rendezvous), wait for all, and
    fail with their output if any exits non-zero."""
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, env in jobs
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(x[-3000:] for x in logs)


def _check_ranks_identical(out: Path, world: int) -> None:
    dumps = [torch.load(out / f"rank{r}.pt") for r in range(world)]
    assert all(d["iter"] == dumps[0]["iter"] > 0 for d in dumps)
    for k, v in dumps[0]["params"].items():
        for d in dumps[1:]:
            assert torch.equal(v, d["params"][k]), k
    assert f"world size {world}" in (out / "log.txt").read_text()


def test_torchrun_one_node_two_processes(tmp_path):
    out = tmp_path / "run"
    cmd = _torchrun("--standalone", "--nproc_per_node=2", str(RUNNER), str(out), "--dump")
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check_ranks_identical(out, 2)
    ck = torch.load(out / "checkpoint.pth", weights_only=False)
    assert ck["world_size"] == 2


@pytest.mark.slow  # two rendezvous agents; the one-node torchrun and the gloo DDP run stay in the default run
def test_torchrun_two_nodes_c10d_rendezvous(tmp_path):
    """Two torchrun agents ("nodes") x 1 process, rendezvous at a c10d endpoint on 127.0.0.1."""
    out = tmp_path / "run"
    port = free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}"]
    common += ["--rdzv_id=vidseg-test", "--max_restarts=0"]
    cmd = _torchrun(*common, str(RUNNER), str(out), "--dump")
    _run_together([(cmd, _env()), (cmd, _env())])
    _check_ranks_identical(out, 2)


@pytest.mark.slow  # two node processes; --num-machines argument checks stay in the default run
def test_two_machines_without_torchrun(tmp_path):
    """The ``train_net.py --num-machines 2 --machine-rank R --dist-url tcp://HOST:PORT`` layout: each
    "machine" spawns its local process and all join machine 0's address."""
    out = tmp_path / "run"
    port = free_port()
    jobs = []
    for rank in range(2):
        env = _env() | {
            "VIDSEG_NUM_MACHINES": "2",
            "VIDSEG_MACHINE_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        jobs.append(([sys.executable, str(RUNNER), str(out), "--dump"], env))
    _run_together(jobs)
    _check_ranks_identical(out, 2)


def test_train_net_multi_machine_needs_a_tcp_dist_url(tmp_path):
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run(
        [sys.executable, str(root / "train_net.py"), "--num-machines", "2", "--dist-url", "auto"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "--dist-url tcp://HOST:PORT" in p.stderr
