"""The engine's evaluator (evaluation during training, ``vidseg eval``) is the one the dataset's metadata
names, and it runs the metric in the trainer's own process."""

from types import SimpleNamespace

import pytest

from vidseg.engine.run import DataSource
from vidseg.evaluation import YTVISEvaluator


@pytest.mark.parametrize(
    ("name", "ovis"), [("ovis_val", True), ("ytvis_2019_val", False), ("ytvis_2022_val", False)]
)
def test_training_evaluator_follows_the_metadata_and_never_forks(tmp_path, name, ovis):
    cfg = SimpleNamespace(MODEL=SimpleNamespace(MASK_ON=True), DATASETS=SimpleNamespace(ROOT=str(tmp_path)))
    ev = DataSource().evaluator(cfg, name, tmp_path / "eval")
    assert type(ev) is YTVISEvaluator and ev.ovis is ovis
    assert ev.workers == 1 and ev.progress is False
    assert ev.output_dir == str(tmp_path / "eval")
