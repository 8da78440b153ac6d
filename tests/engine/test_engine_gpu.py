"""GPU-only: AMP training (bf16, and fp16 with a grad scaler) of the toy model."""

import pytest
import torch
from engine_standins import StandinData, toy_cfg

from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.training_state import load_training_state

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_training_on_gpu(tmp_path, dtype):
    cfg = toy_cfg(tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", dtype)
    assert run_train(cfg, RunOptions(progress=False), data=StandinData()) == 0
    ck = load_training_state(tmp_path / "checkpoint.pth")
    assert (ck["scaler"] is not None) == (dtype == "float16")
    assert all(torch.isfinite(v.float()).all() for v in ck["model"].values())
    assert "cuda" in ck["rng"][0]


def _nccl_all_reduce(path: str) -> int:
    """On each spawned rank (NCCL group, one GPU each): rank + 1 summed over ranks, and the mean helper."""
    import torch.distributed as tdist

    from vidseg.engine import dist

    t = torch.tensor([float(dist.get_rank() + 1)], device="cuda")
    tdist.all_reduce(t)
    mean = dist.all_reduce_mean(float(dist.get_rank()), device="cuda")
    torch.save(
        {"sum": t.item(), "mean": mean, "backend": tdist.get_backend()}, f"{path}/rank{dist.get_rank()}.pt"
    )
    return 0


def _clean_dist_env(monkeypatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between ranks needs 2 CUDA devices")
def test_nccl_collectives_between_two_ranks(tmp_path, monkeypatch):
    from vidseg.engine.launch import launch

    _clean_dist_env(monkeypatch)
    assert launch(_nccl_all_reduce, 2, str(tmp_path)) == 0  # backend None: NCCL, as --num-gpus 2 picks
    for r in (0, 1):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert got == {"sum": 3.0, "mean": 0.5, "backend": "nccl"}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL training needs 2 CUDA devices")
def test_nccl_two_rank_training_keeps_ranks_identical(tmp_path, monkeypatch):
    from engine_standins import DumpHook

    _clean_dist_env(monkeypatch)
    cfg = toy_cfg(tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.IMS_PER_BATCH", 2)
    opts = RunOptions(num_procs=2, progress=False, extra_hooks=(DumpHook(str(tmp_path)),))
    assert run_train(cfg, opts, data=StandinData()) == 0
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", map_location="cpu") for r in (0, 1))
    assert r0["iter"] == r1["iter"] == 6
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k


def test_nccl_single_rank_group_on_one_gpu(tmp_path):
    """One GPU is enough to check that NCCL itself works here (a one-rank group; DDP needs two)."""
    import torch.distributed as tdist

    if not tdist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    store = tdist.FileStore(str(tmp_path / "store"), 1)
    tdist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        t = torch.ones(4, device="cuda")
        tdist.all_reduce(t)
        assert t.tolist() == [1.0] * 4 and tdist.get_backend() == "nccl"
    finally:
        tdist.destroy_process_group()
