"""The restricted unpickler: official legacy pickles load, malicious ones are refused."""

import argparse
import os
import pickle

import numpy as np
import pytest
import torch
from yacs.config import CfgNode

from vidseg.checkpoints import CheckpointError, UnsafeCheckpointError, safe_read


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _devis_like(path, **extra):
    cfg = CfgNode({"MODEL": CfgNode({"BACKBONE": "resnet50", "NUM_QUERIES": 300}), "SEED": 42})
    cfg.freeze()
    obj = {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "i": torch.tensor([1, 2], dtype=torch.int64)},
        "cfg": cfg,
        "epoch": 3,
        "best_val_stats": [np.float64(0.38), np.arange(3)],
        **extra,
    }
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def test_legacy_pickle_with_yacs_cfg_is_read_as_plain_dict(tmp_path):
    path = tmp_path / "devis.pth"
    _devis_like(path)
    with pytest.raises(pickle.UnpicklingError):  # proves the restricted path is needed
        torch.load(path, weights_only=True)
    obj = safe_read(path)
    assert type(obj["cfg"]) is dict and type(obj["cfg"]["MODEL"]) is dict
    assert obj["cfg"]["MODEL"]["NUM_QUERIES"] == 300 and obj["epoch"] == 3
    torch.testing.assert_close(obj["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert obj["model"]["i"].dtype == torch.int64
    assert obj["best_val_stats"][0] == pytest.approx(0.38) and obj["best_val_stats"][1].tolist() == [0, 1, 2]


def test_namespace_args_become_dict(tmp_path):
    path = tmp_path / "ddetr.pth"
    torch.save(
        {"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=2e-4, with_box_refine=True)}, path
    )
    obj = safe_read(path)
    assert obj["args"] == {"lr": 2e-4, "with_box_refine": True}


@pytest.mark.parametrize("legacy", [True, False])
def test_malicious_reduce_is_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(
        {"model": {"w": torch.ones(1)}, "cfg": CfgNode({"A": 1}), "x": _Evil(marker)},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system.*allow-list") as info:
        safe_read(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_plain_pickle_with_eval_is_refused(tmp_path):
    class EvalReduce:
        def __reduce__(self):
            return (eval, ("1+1",))

    path = tmp_path / "evil_eval.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": EvalReduce()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil_eval.pth"):
        safe_read(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        safe_read(tmp_path / "nope.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        safe_read(bad)
    truncated = tmp_path / "truncated.pth"
    _devis_like(tmp_path / "full.pth")
    truncated.write_bytes((tmp_path / "full.pth").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        safe_read(truncated)


def test_weights_only_files_use_the_fast_path(tmp_path, monkeypatch):
    path = tmp_path / "plain.pth"
    torch.save({"model": {"w": torch.ones(3)}, "config": {"A": 1}}, path)
    import vidseg.checkpoints.safe_load as sl

    def boom(*a, **k):
        raise AssertionError("restricted unpickler should not be needed")

    monkeypatch.setattr(sl.RestrictedUnpickler, "load", boom)
    assert safe_read(path)["config"] == {"A": 1}
