"""Every method of ``vidseg.models.METHODS``, from its tiny config: forward, losses, backward, inference.

A method added to the table gets these tests without writing them.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vidseg.models import METHODS, build_model, load_config, method_names
from vidseg.structures.clip_batch import ClipBatch, ClipTargets
from vidseg.structures.masks import decode_segmentation
from vidseg.structures.results import VideoResult

CLASSES = ["square", "disc"]
H, W = 64, 96


def _clip(rng: np.random.Generator, t: int) -> tuple[torch.Tensor, ClipTargets]:
    """``frames [T, 3, H, W]`` (normalised-looking values) with 1-2 moving squares/discs and their targets."""
    frames = torch.from_numpy(rng.normal(0, 0.3, size=(t, 3, H, W)).astype(np.float32))
    n = int(rng.integers(1, 3))
    yy, xx = np.mgrid[:H, :W]
    masks = np.zeros((n, t, H, W), dtype=bool)
    labels = rng.integers(0, len(CLASSES), size=n)
    for k in range(n):
        r, cy, cx = 8, int(rng.integers(10, H - 10)), int(rng.integers(10, W - 10))
        for f in range(t):
            x = min(max(cx + 2 * f, r), W - r)
            square = (abs(yy - cy) <= r) & (abs(xx - x) <= r)
            m = square if labels[k] == 0 else (yy - cy) ** 2 + (xx - x) ** 2 <= r * r
            masks[k, f] = m
            frames[f, :, torch.from_numpy(m)] = 2.0 if labels[k] == 0 else -2.0
    m = torch.from_numpy(masks)
    boxes = torch.zeros(n, t, 4)
    for k in range(n):
        for f in range(t):
            ys, xs = np.nonzero(masks[k, f])
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            boxes[k, f] = torch.tensor([(x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H])
    targets = ClipTargets(
        labels=torch.as_tensor(labels, dtype=torch.int64),
        ids=torch.arange(1, n + 1),
        masks=m,
        boxes=boxes,
        valid=m.flatten(2).any(-1),
    )
    return frames, targets


class _Frames:
    """The lazy-frames interface of ``VideoItem.frames`` over a tensor ``[T, 3, H, W]``."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, t: int) -> torch.Tensor:
        return self.x[t]

    def get(self, idx) -> torch.Tensor:
        return self.x[list(idx)]

    def all(self) -> torch.Tensor:
        return self.x


def _cfg(name: str):
    tiny = METHODS[name].tiny_config
    return load_config(tiny, ["MODEL.META_ARCHITECTURE", name, "MODEL.DEVICE", "cpu"])


def test_the_table_is_not_empty_and_each_method_has_its_keys():
    assert {"ToyVIS", "DeformableDETRSegm"} <= set(METHODS)
    for name in method_names():
        cfg = _cfg(name)
        assert cfg.MODEL.META_ARCHITECTURE == name


@pytest.mark.parametrize("name", method_names())
def test_method_forward_backward_and_inference(name):
    torch.manual_seed(0)
    cfg = _cfg(name)
    meta = SimpleNamespace(name="tiny", classes=CLASSES, num_classes=len(CLASSES))
    bundle = build_model(cfg, meta)
    t = int(cfg.INPUT.NUM_FRAMES)
    rng = np.random.default_rng(0)
    clips = [_clip(rng, t) for _ in range(2)]
    frames = torch.stack([c[0] for c in clips])
    batch = ClipBatch(
        frames=frames,
        pad_mask=torch.zeros(2, t, H, W, dtype=torch.bool),
        targets=[c[1] for c in clips],
        meta=[{"orig_size": (H, W), "image_size": (H, W)} for _ in clips],
    )
    model = bundle.model.train()
    out = model(batch)
    assert "pred_logits" in out and "pred_masks" in out
    losses = bundle.criterion(out, batch.targets)
    weighted = {k: v for k, v in losses.items() if k in bundle.criterion.weight_dict}
    assert weighted and all(torch.isfinite(v) for v in weighted.values()), losses
    total = sum(bundle.criterion.weight_dict[k] * v for k, v in weighted.items())
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    if bundle.param_groups is not None:
        groups = bundle.param_groups(model)
        assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)

    # Inference on a 3-frame video gives a VideoResult at the original size.
    video_frames = _clip(rng, 3)[0]
    video = SimpleNamespace(
        video_id=7, record=None, frames=_Frames(video_frames), orig_size=(H, W), image_size=(H, W), length=3
    )
    result = bundle.inference(model.eval(), video)
    assert isinstance(result, VideoResult)
    assert (result.video_id, result.height, result.width) == (7, H, W)
    assert result.tracks, "a model always keeps its top-k tracks"
    for track in result.tracks:
        assert 0 <= track.label < len(CLASSES) and 0.0 <= track.score <= 1.0
        assert len(track.masks) == 3
        for m in track.masks:
            if m is not None:
                assert decode_segmentation(m, H, W).shape == (H, W)
