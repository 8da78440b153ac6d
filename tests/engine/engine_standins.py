"""Small in-memory stand-ins for the data pipeline and evaluator, used only by the engine's tests.

``StandinData`` is a ``vidseg.engine.run.DataSource``: a map-style train set of 2-frame clips of coloured
squares (class 0) and discs (class 1), deterministic in (seed, epoch, index); a test set of whole videos as
``ClipBatch`` (B == 1); a metadata object and an evaluator that reports the mean track score as ``segm/AP``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from vidseg.engine.run import DataSource
from vidseg.engine.trainer import HookBase
from vidseg.evaluation.results_file import official_entries, write_results
from vidseg.models import get_cfg
from vidseg.structures.clip_batch import ClipBatch, ClipTargets
from vidseg.utils import dist

HERE = Path(__file__).resolve().parent


def _draw(rng: np.random.Generator, t: int, h: int, w: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    frames = rng.uniform(0.3, 0.5, size=(t, 3, h, w)).astype(np.float32)
    n = int(rng.integers(1, 3))
    labels, masks = [], np.zeros((n, t, h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    for k in range(n):
        label = int(rng.integers(0, 2))
        r = int(rng.integers(4, 7))
        cy, cx = rng.integers(r, h - r), rng.integers(r, w - r)
        vy, vx = rng.integers(-2, 3, size=2)
        for f in range(t):
            y, x = np.clip(cy + vy * f, r, h - r), np.clip(cx + vx * f, r, w - r)
            if label == 0:
                m = (abs(yy - y) <= r) & (abs(xx - x) <= r)
            else:
                m = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            masks[k, f] = m
            colour = (0.9, 0.1, 0.1) if label == 0 else (0.1, 0.9, 0.2)
            for c in range(3):
                frames[f, c][m] = colour[c]
        labels.append(label)
    return frames, labels, masks


def _targets(labels: list[int], masks: np.ndarray) -> ClipTargets:
    m = torch.from_numpy(masks)
    n, t, h, w = m.shape
    return ClipTargets(
        labels=torch.tensor(labels, dtype=torch.int64),
        ids=torch.arange(1, n + 1),
        masks=m,
        boxes=torch.zeros(n, t, 4),
        valid=m.flatten(2).any(-1),
    )


class ShapesClips:
    """Train clips: item ``i`` of epoch ``e`` is drawn from ``default_rng([seed, e, i])``."""

    def __init__(self, size: int = 6, frames: int = 2, hw: int = 32, seed: int = 0) -> None:
        self.size, self.frames, self.hw, self.seed, self.epoch = size, frames, hw, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        frames, labels, masks = _draw(rng, self.frames, self.hw, self.hw)
        return {"frames": (torch.from_numpy(frames) - 0.4) / 0.25, "targets": _targets(labels, masks), "i": i}


def collate(items: list[dict]) -> ClipBatch:
    frames = torch.stack([it["frames"] for it in items])
    b, t, _, h, w = frames.shape
    return ClipBatch(
        frames=frames,
        pad_mask=torch.zeros(b, t, h, w, dtype=torch.bool),
        targets=[it["targets"] for it in items],
        meta=[{"video_id": it["i"], "orig_size": (h, w), "image_size": (h, w)} for it in items],
    )


class ShapesVideos:
    """Test set: whole 3-frame videos as ``ClipBatch`` (B == 1), video ids 1..n."""

    def __init__(self, size: int = 3, hw: int = 32) -> None:
        self.size, self.hw = size, hw

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> ClipBatch:
        frames, labels, masks = _draw(np.random.default_rng([99, i]), 3, self.hw, self.hw)
        f = (torch.from_numpy(frames)[None] - 0.4) / 0.25
        return ClipBatch(
            frames=f,
            pad_mask=torch.zeros(1, 3, self.hw, self.hw, dtype=torch.bool),
            meta=[{"video_id": i + 1, "orig_size": (self.hw, self.hw), "image_size": (self.hw, self.hw)}],
        )


class MeanScoreEvaluator:
    """Evaluator stand-in: gathers like the real one, writes the results files on rank 0 and reports
    ``segm/AP`` = 100 x the mean track score (a number that moves with training)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def reset(self) -> None:
        self.results = []

    def process(self, inputs, outputs) -> None:
        assert len(inputs) == len(outputs)
        self.results += list(outputs)

    def evaluate(self) -> dict:
        parts = dist.all_gather_object(self.results)
        if dist.get_rank() != 0:
            return {}
        results = sorted((r for p in parts for r in p), key=lambda r: r.video_id)
        write_results(official_entries(results, [1, 2]), self.out_dir)
        scores = [t.score for r in results for t in r.tracks]
        return {"segm": {"AP": 100.0 * float(np.mean(scores)) if scores else 0.0}}


class StandinData(DataSource):
    def __init__(self, size: int = 6, frames: int = 2, hw: int = 32) -> None:
        self.size, self.frames, self.hw = size, frames, hw

    def train(self, cfg):
        return ShapesClips(self.size, self.frames, self.hw, seed=cfg.SEED), collate

    def test(self, cfg, name):
        return ShapesVideos(3, self.hw), None

    def metadata(self, cfg, name):
        return SimpleNamespace(num_classes=2, label_to_category_id=[1, 2], has_annotations=True)

    def evaluator(self, cfg, name, out_dir):
        return MeanScoreEvaluator(str(out_dir))


def toy_cfg(out_dir: str | Path, *opts: str):
    """A tiny ToyVIS config on the stand-in data (CPU, no workers, no Visdom)."""
    cfg = get_cfg("ToyVIS")
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.TOY.NUM_CLASSES = 2
    cfg.MODEL.TOY.NUM_QUERIES = 4
    cfg.MODEL.TOY.HIDDEN_DIM = 16
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.EPOCHS = 2
    cfg.SOLVER.STEPS = (1,)
    cfg.SOLVER.BATCH_SIZE = 2
    cfg.SOLVER.GRAD_CLIP_MAX_NORM = 1.0
    cfg.DATASETS.TEST = ("standin_val",)
    cfg.TEST.EVAL_PERIOD = 1
    cfg.VISDOM_AND_LOG_INTERVAL = 1
    cfg.merge_from_list(list(opts))
    return cfg


class SleepHook(HookBase):
    """Slows every step down so a test can kill the run mid-epoch."""

    def after_step(self) -> None:
        time.sleep(0.3)


class DumpHook(HookBase):
    """Rank r writes ``rank{r}.pt`` in ``out_dir`` after training: its parameters, the criterion's last
    (all-reduced) normaliser and the local instance count of its last batch."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.n_local = 0

    def after_step(self) -> None:
        t = self.trainer
        bs = t.sampler.batch_size
        idx = t.sampler.epoch_indices(t.epoch)[(t.inner - 1) * bs : t.inner * bs]
        self.n_local = sum(len(t.dataset[i]["targets"]) for i in idx)

    def after_train(self) -> None:
        t = self.trainer
        state = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
        rec = {
            "params": state,
            "num_masks": t.criterion.last_num_masks,
            "n_local": self.n_local,
            "iter": t.iter,
        }
        torch.save(rec, Path(self.out_dir) / f"rank{dist.get_rank()}.pt")
