"""Fixtures of the data tests: one small synthetic dataset per session."""

from pathlib import Path

import pytest

from vidseg.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(
        out, seed=7, num_videos_train=6, num_videos_val=2, num_frames=(3, 8), num_classes=4, progress=False
    )
    return out
