"""Unit tests of the engine's parts: sampler, optimizer groups, schedules, clipping, checkpoints, run dir."""

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from vidseg.engine import training_state as ck
from vidseg.engine.batch_sampler import ResumableBatchSampler
from vidseg.engine.optim import (
    GroupSpec,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    param_groups_by_substrings,
    warmup_multistep_factor,
)
from vidseg.engine.run_setup import RunDirError, decide_resume, per_rank_batch_size, write_config
from vidseg.engine.writers import JSONLinesWriter
from vidseg.models import get_cfg


def test_sampler_deterministic_disjoint_and_resumable():
    s0 = ResumableBatchSampler(10, 2, world_size=2, rank=0, seed=3)
    s1 = ResumableBatchSampler(10, 2, world_size=2, rank=1, seed=3)
    assert s0.batches_per_epoch == 2  # 10 // (2 x 2): the tail is dropped
    for s in (s0, s1):
        s.set_epoch(4)
    b0, b1 = list(s0), list(s1)
    flat0, flat1 = sum(b0, []), sum(b1, [])
    assert not set(flat0) & set(flat1)
    again = ResumableBatchSampler(10, 2, world_size=2, rank=0, seed=3)
    again.set_epoch(4)
    assert list(again) == b0  # a function of (seed, epoch) only
    s0.set_epoch(5)
    assert list(s0) != b0  # another epoch, another order
    s0.set_epoch(4, start=1)
    assert list(s0) == b0[1:] and len(s0) == 1
    with pytest.raises(ValueError, match="position"):
        s0.set_epoch(4, start=3)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 2, world_size=2)


def test_param_groups_by_substring_and_lr_mults():
    model = nn.ModuleDict({"backbone": nn.Linear(2, 2), "head": nn.Linear(2, 2), "offsets": nn.Linear(2, 2)})
    model["head"].bias.requires_grad_(False)
    groups = param_groups_by_substrings(
        model,
        1e-4,
        1e-4,
        [GroupSpec("backbone", ["backbone"], 0.1), GroupSpec("proj", ["offsets"], 0.1, 0.0)],
    )
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"base", "backbone", "proj"}
    assert len(by_name["base"]["params"]) == 1  # the frozen bias is left out
    assert by_name["backbone"]["lr"] == pytest.approx(1e-5)
    assert by_name["proj"]["weight_decay"] == 0.0 and by_name["backbone"]["weight_decay"] == 1e-4
    opt = build_optimizer(groups)
    assert isinstance(opt, torch.optim.AdamW) and [g["name"] for g in opt.param_groups] == [
        "base",
        "backbone",
        "proj",
    ]


def test_epoch_schedule_is_stepped_per_epoch_like_devis():
    opt = build_optimizer([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}])
    sch = build_scheduler(opt, "epoch", [3, 7])
    lrs = []
    for _epoch in range(1, 10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_multistep():
    assert warmup_multistep_factor(0, [10], 0.1, 4, 0.25) == pytest.approx(0.25)
    assert warmup_multistep_factor(2, [10], 0.1, 4, 0.25) == pytest.approx(0.625)
    assert warmup_multistep_factor(4, [10], 0.1, 4, 0.25) == 1.0
    assert warmup_multistep_factor(10, [10], 0.1, 4, 0.25) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        build_scheduler(
            build_optimizer([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}]), "cosine", []
        )


@pytest.mark.parametrize("mode", ["full_model", "per_group"])
def test_clip_gradients(mode):
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4))
    opt = build_optimizer([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 1.0}])
    a.grad, b.grad = torch.full((4,), 3.0), torch.full((4,), 4.0)
    total = clip_gradients(opt, 1.0, mode)
    if mode == "full_model":
        assert total == pytest.approx(10.0)
        assert float(torch.cat([a.grad, b.grad]).norm()) == pytest.approx(1.0, rel=1e-4)
    else:
        assert float(a.grad.norm()) == pytest.approx(1.0, rel=1e-4)
        assert float(b.grad.norm()) == pytest.approx(1.0, rel=1e-4)


def test_atomic_save_never_leaves_a_torn_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    ck.save_training_state({"model": {"w": torch.ones(2)}}, path)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_training_state({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(ck.load_training_state(path)["model"]["w"], torch.ones(2))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # no temporary left behind
    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(RuntimeError, match="torn.pth"):
        ck.load_training_state(tmp_path / "torn.pth")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        ck.load_training_state(tmp_path / "nothere.pth")


def test_rng_state_round_trip():
    state = ck.get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_run_folder_policy(tmp_path):
    cfg = get_cfg("ToyVIS")
    cfg.OUTPUT_DIR = str(tmp_path)
    assert decide_resume(cfg) is False
    with pytest.raises(RunDirError, match="no checkpoint to resume"):
        decide_resume(cfg, resume=True)
    write_config(cfg)
    ck.save_training_state({"model": {}}, tmp_path / ck.LAST)
    assert decide_resume(cfg) is True  # same config: automatic resume
    other = cfg.clone()
    other.SOLVER.BASE_LR = 0.5
    other.VISDOM_ON = True  # run keys do not count
    with pytest.raises(RunDirError, match=r"SOLVER.BASE_LR.*--resume.*--overwrite"):
        decide_resume(other)
    assert decide_resume(other, resume=True) is True
    assert decide_resume(other, overwrite=True) is False


def test_batch_split():
    assert per_rank_batch_size(8, 1, 4) == 2
    assert per_rank_batch_size(0, 3, 4) == 3
    with pytest.raises(ValueError, match="not divisible"):
        per_rank_batch_size(6, 1, 4)


def test_jsonl_writer_truncates_on_resume(tmp_path):
    w = JSONLinesWriter(tmp_path / "m.jsonl")
    for i in range(1, 6):
        w.write_train(i, {"loss": float(i)})
    w.close()
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"type": "train", "it')  # torn by a kill
    w = JSONLinesWriter(tmp_path / "m.jsonl", resume_iter=3)
    w.write_train(4, {"loss": 40.0})
    w.close()
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["iter"], r["loss"]) for r in lines] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_deterministic_mode_and_seeding():
    from vidseg.engine.run_setup import seed_all, set_deterministic

    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
    seed_all(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_all(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    seed_all(6)  # rank 1 of SEED 5
    assert torch.rand(1).item() != a[2]
