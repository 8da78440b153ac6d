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
