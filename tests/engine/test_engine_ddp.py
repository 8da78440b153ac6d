"""Two gloo processes on CPU (the ``--num-gpus 2`` path): gradients synchronised, normalisers all-reduced."""

import torch
from engine_standins import DumpHook, StandinData, toy_cfg

from vidseg.engine.run import RunOptions, run_train


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the spawned ranks
    # 6 clips, IMS_PER_BATCH 2 split over 2 ranks: 3 steps per epoch, 2 epochs
    cfg = toy_cfg(tmp_path, "SOLVER.IMS_PER_BATCH", 2)
    opts = RunOptions(num_procs=2, progress=False, extra_hooks=(DumpHook(str(tmp_path)),))
    assert run_train(cfg, opts, data=StandinData()) == 0
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["iter"] == r1["iter"] == 6
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    # every rank divided by the mean instance count over ranks, whatever it saw itself
    assert r0["num_masks"] == r1["num_masks"] == max((r0["n_local"] + r1["n_local"]) / 2, 1.0)
    log = (tmp_path / "log.txt").read_text()
    assert "world size 2" in log
    assert "CPU threads: 1 intra-op thread(s) (OMP_NUM_THREADS=1)" in log  # the user's value, said once
    ck = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert len(ck["rng"]) == 2 and ck["world_size"] == 2  # every rank's RNG state is kept
    assert (tmp_path / "eval_results" / "epoch_2" / "results.json").is_file()
