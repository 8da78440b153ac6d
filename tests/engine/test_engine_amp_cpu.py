"""AMP through the trainer on CPU (CPU autocast): the same code path as on GPU, checked in CI.

bf16 autocasts without a scaler; fp16 adds a gradient scaler whose state goes into the checkpoint and comes
back on resume. The GPU variants are in test_engine_gpu.py."""

import pytest
import torch
from engine_standins import StandinData, toy_cfg
from torch import nn

from vidseg.engine.hooks import HookBase
from vidseg.engine.run import RunOptions, run_train
from vidseg.engine.training_state import load_training_state


class DtypeProbe(HookBase):
    """Records the dtype a Linear layer of the model produces during training steps."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def before_train(self) -> None:
        lin = next(m for m in self.trainer.model.modules() if isinstance(m, nn.Linear))
        lin.register_forward_hook(lambda _m, _i, out: self.dtypes.add(out.dtype))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_training_on_cpu_autocasts_and_resumes(tmp_path, dtype):
    amp = ("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", dtype, "TEST.EVAL_PERIOD", 0)
    probe = DtypeProbe()
    cfg = toy_cfg(tmp_path, *amp, "SOLVER.EPOCHS", 1)
    assert run_train(cfg, RunOptions(progress=False, extra_hooks=(probe,)), data=StandinData()) == 0
    assert probe.dtypes == {getattr(torch, dtype)}  # the model ran under autocast
    ck = load_training_state(tmp_path / "checkpoint.pth")
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())  # fp32 master
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    if dtype == "float16":
        assert ck["scaler"] is not None and ck["scaler"]["scale"] > 0
    else:
        assert ck["scaler"] is None
    # resume for one more epoch: the scaler state is restored, training goes on
    cfg = toy_cfg(tmp_path, *amp, "SOLVER.EPOCHS", 2)
    assert run_train(cfg, RunOptions(resume=True, progress=False), data=StandinData()) == 0
    ck2 = load_training_state(tmp_path / "checkpoint.pth")
    assert ck2["epoch"] > ck["epoch"] and ck2["iter"] > ck["iter"]


def test_amp_rejects_unknown_dtype(tmp_path):
    cfg = toy_cfg(tmp_path, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", "float8")
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        run_train(cfg, RunOptions(progress=False), data=StandinData())
